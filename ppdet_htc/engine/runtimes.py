"""How a built, loaded model runs inference: the exact dynamic graph, a faster dynamic graph, or the model
exported in-process and run by Paddle Inference (oneDNN or OpenVINO kernels).

Every runner has ``detect(batch) -> [per-image dict]`` (the format of ``outputs.split_outputs``), so
``Detector``, evaluation and the benchmark use them interchangeably. Runtimes:

* ``exact``: dynamic graph, Paddle's native kernels (today's numerics; MKL's dispatch is a process-level
  switch, see ``ppdet_htc/runtime.py``).
* ``dynamic``: dynamic graph with BatchNorm folded into the convolutions.
* ``onednn`` (default on the CPU): the model is traced (``paddle.jit.to_static``) into a temporary folder and
  run by Paddle Inference with oneDNN kernels (conv+BN+ReLU fused by its passes).
* ``openvino``: the same program on Paddle Inference's OpenVINO engine.
* ``inference``: the same program on Paddle Inference's native kernels.

The exported program takes one image per run, so a batch is run image by image (a padded batch gives the
same detections as its images alone). On a GPU the Paddle Inference runtimes fall back to ``dynamic``.
"""
import logging
import os
import shutil
import tempfile

import numpy as np
import paddle

from ..runtime import exact_requested
from .outputs import split_outputs

__all__ = ["RUNTIMES", "DEFAULT_RUNTIME", "RUNTIME_ENV", "resolve_runtime", "build_runner", "DynamicRunner",
           "InferenceRunner", "create_inference_predictor", "MODEL_INPUTS"]

logger = logging.getLogger(__name__)

MODEL_INPUTS = ("image", "im_shape", "scale_factor")
RUNTIMES = {
    "exact": "dynamic graph, native kernels",
    "dynamic": "dynamic graph, BatchNorm folded into convs",
    "onednn": "Paddle Inference + oneDNN",
    "openvino": "Paddle Inference + OpenVINO",
    "inference": "Paddle Inference, native kernels",
}
INFERENCE_ENGINES = ("onednn", "openvino", "inference")
DEFAULT_RUNTIME = "onednn"
RUNTIME_ENV = "PPDET_HTC_RUNTIME"


def resolve_runtime(runtime=None, exact=False, device="cpu"):
    """The runtime to use: ``exact`` if asked (argument or ``PPDET_HTC_EXACT=1``), else ``runtime``, else
    ``$PPDET_HTC_RUNTIME``, else :data:`DEFAULT_RUNTIME`; Paddle Inference runtimes become ``dynamic`` on GPU."""
    if exact or (runtime is None and exact_requested()):
        return "exact"
    if runtime is None:
        runtime = os.environ.get(RUNTIME_ENV) or DEFAULT_RUNTIME
    if runtime not in RUNTIMES:
        raise ValueError("runtime must be one of {}, got {!r}".format(", ".join(RUNTIMES), runtime))
    if runtime in INFERENCE_ENGINES and not str(device).startswith("cpu"):
        return "dynamic"
    return runtime


def _threads():
    from .model_builder import cpu_threads, set_cpu_threads

    return cpu_threads() or set_cpu_threads()


class DynamicRunner(object):
    """Runs the dygraph model (``fold_bn``: fold BatchNorm into convs first; the model must be in eval mode)."""

    def __init__(self, model, fold_bn=False):
        self.model = model
        self.runtime = "exact"
        if fold_bn:
            from ..modeling.fold_bn import fold_batch_norm

            model.eval()
            fold_batch_norm(model)
            self.runtime = "dynamic"

    @property
    def kernels(self):
        return RUNTIMES[self.runtime]

    def detect(self, batch):
        with paddle.no_grad():
            outputs = self.model({k: batch[k] for k in MODEL_INPUTS})
        # Dygraph outputs carry mask probabilities + paste boxes; pasting is result conversion.
        return split_outputs(outputs, batch.get("im_id"), getattr(self.model, "mask_post_process", None))


def create_inference_predictor(model_dir, engine="onednn", threads=None):
    """A Paddle Inference predictor for an exported model folder on the CPU with ``engine`` kernels."""
    from paddle import inference

    params = os.path.join(model_dir, "model.pdiparams")
    program = next((os.path.join(model_dir, n) for n in ("model.json", "model.pdmodel")
                    if os.path.isfile(os.path.join(model_dir, n))), None)
    if program is None or not os.path.isfile(params):
        raise FileNotFoundError("{} does not hold an exported model (model.json or model.pdmodel + "
                                "model.pdiparams)".format(model_dir))
    config = inference.Config(program, params)
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(int(threads or _threads()))
    enable = getattr(config, "enable_onednn", None) or config.enable_mkldnn
    disable = getattr(config, "disable_onednn", None) or getattr(config, "disable_mkldnn", None)
    if engine == "onednn":
        enable()
        cache = getattr(config, "set_onednn_cache_capacity", None) or config.set_mkldnn_cache_capacity
        cache(16)  # primitives are cached per input shape; images vary in size
    elif engine == "openvino":
        if not hasattr(config, "enable_openvino_engine"):
            raise ValueError("runtime 'openvino' needs Paddle >= 3 (Paddle Inference's OpenVINO engine); "
                             "this is Paddle {}".format(paddle.__version__))
        if disable is not None:
            disable()
        config.enable_openvino_engine(inference.PrecisionType.Float32)
    elif engine == "inference":
        if disable is not None:  # Paddle 3 turns oneDNN on by default on the CPU
            disable()
    else:
        raise ValueError("engine must be one of {}, got {!r}".format(INFERENCE_ENGINES, engine))
    config.disable_glog_info()
    config.switch_ir_optim(True)
    return inference.create_predictor(config)


class InferenceRunner(object):
    """The model traced in-process and run by Paddle Inference with ``engine`` kernels (CPU)."""

    def __init__(self, model, engine="onednn", threads=None, model_dir=None):
        from .export import save_inference_program

        self.runtime = engine
        tmp = None
        if model_dir is None:
            tmp = model_dir = tempfile.mkdtemp(prefix="ppdet_htc_inference_")
            model.eval()
            save_inference_program(model, model_dir)
        try:
            self.predictor = create_inference_predictor(model_dir, engine, threads)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        self.input_names = self.predictor.get_input_names()
        self.output_names = self.predictor.get_output_names()

    @property
    def kernels(self):
        return RUNTIMES[self.runtime]

    def run_one(self, image, im_shape, scale_factor):
        """One preprocessed image ``[1,3,H,W]`` -> ``(bbox [k,6], mask [k,h,w] uint8)`` (placeholder row dropped)."""
        feed = {"image": image, "im_shape": im_shape, "scale_factor": scale_factor}
        for name in self.input_names:
            handle = self.predictor.get_input_handle(name)
            arr = np.ascontiguousarray(feed[name], dtype=np.float32)
            handle.reshape(arr.shape)
            handle.copy_from_cpu(arr)
        self.predictor.run()
        outs = [self.predictor.get_output_handle(n).copy_to_cpu() for n in self.output_names]
        bbox, mask = outs[0], (outs[2] if len(outs) > 2 else None)
        keep = bbox[:, 1] >= 0  # the program always ends with a placeholder row of score -1
        return bbox[keep], (mask[keep] if mask is not None else None)

    def detect(self, batch):
        arrays = {k: _numpy(batch[k]) for k in MODEL_INPUTS}
        im_ids = batch.get("im_id")
        im_ids = _numpy(im_ids).reshape(-1) if im_ids is not None else None
        results = []
        for i in range(arrays["image"].shape[0]):
            bbox, mask = self.run_one(arrays["image"][i:i + 1], arrays["im_shape"][i:i + 1],
                                      arrays["scale_factor"][i:i + 1])
            if mask is not None:
                h, w = int(mask.shape[1]), int(mask.shape[2])
            else:
                h, w = [int(v) for v in np.round(arrays["im_shape"][i] / arrays["scale_factor"][i])]
            det = {"boxes": bbox[:, 2:6].astype(np.float32), "scores": bbox[:, 1].astype(np.float32),
                   "labels": bbox[:, 0].astype(np.int64), "masks": mask, "image_size": (h, w)}
            if im_ids is not None:
                det["im_id"] = int(im_ids[i])
            results.append(det)
        return results


def _numpy(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def build_runner(model, runtime="exact", threads=None):
    """A runner for a loaded model (put into eval mode). ``dynamic`` folds BatchNorm into ``model`` in place."""
    model.eval()
    if runtime == "exact":
        return DynamicRunner(model)
    if runtime == "dynamic":
        return DynamicRunner(model, fold_bn=True)
    try:
        return InferenceRunner(model, runtime, threads)
    except Exception as e:  # e.g. a model that cannot be traced: keep working, but say so
        logger.warning("runtime %r unavailable (%s: %s); using the dynamic graph with folded BatchNorm",
                       runtime, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return DynamicRunner(model, fold_bn=True)
