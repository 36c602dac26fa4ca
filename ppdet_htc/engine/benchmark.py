"""Measure inference latency (with a per-phase breakdown) and training throughput of a config.

Everything is measured, nothing estimated: wall time per iteration after warm-up (median/min/max), the
time inside convolutions and matrix products (forward hooks on Conv2D / Conv2DTranspose / Linear, device
synchronised), their FLOPs, peak memory (RSS, and GPU memory on GPU), and named phases from
``utils.timing.phase``. ``overhead_fraction`` = 1 - (conv + matmul time) / end-to-end time.

Runtimes (``engine/runtimes.py``): the dynamic ones (``exact``, ``dynamic``) are split into the model's
phases; a Paddle Inference program (``onednn``, ``openvino``, ``inference``) is one phase. FLOPs per phase
are always counted in one dynamic-graph pass. The machine's attainable FP32 rate is measured in the same run
(``kernel_rates``) and the model's achieved rate is reported as a fraction of it.
"""
import os
import platform
import resource
import statistics
import time

import numpy as np
import paddle

from ..core import merge_config
from ..data.loader import collate
from ..data.transforms import build_transforms
from ..metrics.coco_eval import detections_to_coco
from ..utils.timing import PhaseTimer, active_timer, phase
from .model_builder import build_model, load_model_weights, select_device, set_cpu_threads
from .runtimes import DynamicRunner

__all__ = ["benchmark_inference", "benchmark_training", "machine_info", "LayerMeter"]


MODEL_INPUTS = ("image", "im_shape", "scale_factor")


def machine_info(device):
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"device": device, "paddle_version": paddle.__version__, "cpu": cpu, "cpu_cores": os.cpu_count(),
            "python": platform.python_version()}
    if device.startswith("gpu"):
        info["gpu"] = paddle.device.cuda.get_device_name()
    return info


def _sync():
    if paddle.device.get_device().startswith("gpu"):
        paddle.device.synchronize()


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class LayerMeter(object):
    """Forward hooks on conv / transposed conv / linear layers: time inside them and their FLOPs."""

    def __init__(self, model):
        self.seconds = 0.0
        self.by_phase = {}
        self.flops = 0
        self.flops_by_phase = {}
        self.count_flops = True
        self.handles = []
        for layer in model.sublayers(include_self=True):
            if isinstance(layer, (paddle.nn.Conv2D, paddle.nn.Conv2DTranspose, paddle.nn.Linear)):
                self.handles.append(layer.register_forward_pre_hook(self._pre))
                self.handles.append(layer.register_forward_post_hook(self._post))

    def _pre(self, layer, inputs):
        _sync()
        layer._bench_t0 = time.perf_counter()

    def _post(self, layer, inputs, output):
        _sync()
        dt = time.perf_counter() - layer._bench_t0
        self.seconds += dt
        timer = active_timer()
        name = timer.current if timer is not None else None
        self.by_phase[name] = self.by_phase.get(name, 0.0) + dt
        if self.count_flops:
            f = _layer_flops(layer, inputs[0], output)
            self.flops += f
            self.flops_by_phase[name] = self.flops_by_phase.get(name, 0) + f

    def remove(self):
        for h in self.handles:
            h.remove()


def _layer_flops(layer, x, y):
    """Multiply-adds x 2 of one call."""
    if isinstance(layer, paddle.nn.Linear):
        return 2 * int(np.prod(x.shape[:-1])) * int(layer.weight.shape[0]) * int(layer.weight.shape[1])
    w = layer.weight.shape
    if isinstance(layer, paddle.nn.Conv2DTranspose):  # weight [in, out/groups, kh, kw]
        return 2 * int(np.prod(x.shape)) * int(w[1]) * int(w[2]) * int(w[3])
    return 2 * int(np.prod(y.shape)) * int(w[1]) * int(w[2]) * int(w[3])  # weight [out, in/groups, kh, kw]


def _synthetic_images(batch_size, image_size, seed=0):
    """Deterministic RGB images with smooth texture and a few solid blobs (not constant, not pure noise)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = image_size
    images = []
    for _ in range(batch_size):
        small = rng.integers(0, 255, size=(max(h // 32, 2), max(w // 32, 2), 3), dtype=np.uint8)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        for _ in range(8):
            cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
            r = int(rng.integers(min(h, w) // 20, min(h, w) // 5))
            cv2.circle(img, (cx, cy), r, tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
        images.append(img)
    return images


def _force_detections(model, num_dets):
    """Random-weight runs: make the outputs look like a trained model's so that every phase does its real
    amount of work. Every RoI gets one class (a hash of its box coordinates) with probability about 0.95 (the
    others stay below NMS's score threshold), so NMS sees one candidate per RoI and ``keep_top_k =
    num_dets`` fixes the detection count. Only parameters and the final class probabilities are changed;
    all computation runs as usual, and the change is made of tensor ops so that exported programs
    (Paddle Inference runtimes) do the same."""
    # Untrained deltas on exploding random activations would decode every proposal to the image border
    # and NMS would merge them: zero them so proposals are the (diverse) anchors, as in a trained model.
    with paddle.no_grad():
        layers = [model.rpn_head.rpn_rois_delta] + list(model.bbox_head.bbox_delta_list)
        for layer in layers:
            layer.weight.set_value(paddle.zeros_like(layer.weight))
            layer.bias.set_value(paddle.zeros_like(layer.bias))
    head = model.bbox_head
    predict = head.predict
    num_classes = head.num_classes
    nms = model.bbox_post_process.nms  # MultiClassNMS (PaddleDetection) or BatchedNMS (mmdetection)
    # The other classes' probability: below the NMS score threshold (e.g. BatchedNMS's 0.001 with few classes).
    threshold = float(getattr(nms, "score_threshold", 0.0))
    off = 0.05 / num_classes if 0.05 / num_classes < threshold else 0.5 * threshold
    peak = 1.0 - off * num_classes

    def predict_with_peaked_scores(*args, **kwargs):
        probs, deltas, rois = predict(*args, **kwargs)
        code = rois[:, 0] * 0.37 + rois[:, 1] * 0.71 + rois[:, 2] * 0.13 + rois[:, 3] * 0.53
        cls = paddle.remainder(paddle.floor(code).astype("int64"), paddle.full([1], num_classes, "int64"))
        onehot = paddle.nn.functional.one_hot(cls, num_classes + 1).astype(probs.dtype)
        return onehot * peak + (1 - onehot) * off, deltas, rois

    head.predict = predict_with_peaked_scores
    nms.keep_top_k = int(num_dets)


def benchmark_inference(cfg, image_size=(800, 1333), batch_size=1, iters=10, warmup=2, num_dets=100,
                        use_weights=False, device=None, progress=True, image_file=None, runtime=None, exact=False,
                        peak=True):
    """Latency and phase breakdown of ``predict`` (preprocessing, model, conversion to COCO results).

    ``image_file``: time this image (each of the ``batch_size`` slots) instead of synthetic ones.
    ``runtime`` / ``exact``: how the model runs (``engine/runtimes.py``; default the fast runtime).
    ``peak``: also measure the machine's attainable FP32 rate (``kernel_rates``) and report the model's
    achieved rate as a fraction of it.
    """
    from .kernel_rates import machine_description, measure_peak_rates
    from .runtimes import build_runner, resolve_runtime

    device = select_device(cfg, device)
    runtime = resolve_runtime(runtime, exact, device)
    h, w = int(image_size[0]), int(image_size[1])
    merge_config(cfg, {"TestReader": {"sample_transforms": [
        {"Decode": {}}, {"Resize": {"target_size": [h, w], "keep_ratio": True, "interp": 1}},
        {"NormalizeImage": {"is_scale": True, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}},
        {"Permute": {}}]}})
    paddle.seed(0)
    model = build_model(cfg)
    model.eval()
    weights = cfg.get("weights") if use_weights else None
    if weights:
        load_model_weights(model, weights)
    else:
        _force_detections(model, num_dets)
    sample_ops = build_transforms(cfg["TestReader"]["sample_transforms"], "TestReader.sample_transforms")
    batch_ops = build_transforms(cfg["TestReader"].get("batch_transforms") or [{"PadBatch": {"pad_to_stride": 32}}],
                                 "TestReader.batch_transforms")
    if image_file:
        import cv2

        bgr = cv2.imread(image_file, cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError("benchmark --image: cannot read {}".format(image_file))
        images = [cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)] * batch_size
    else:
        images = _synthetic_images(batch_size, (h, w))
    clsid2catid = {i: i + 1 for i in range(int(cfg.get("num_classes", 80)))}

    def make_batch():
        samples = []
        for i, im in enumerate(images):
            s = {"image": im, "im_file": "synthetic", "im_id": np.array([i], dtype=np.int64)}
            for op in sample_ops:
                s = op(s)
            samples.append(s)
        for op in batch_ops:
            samples = op(samples)
        return collate(samples)

    # FLOPs of the model per phase, counted by hooks during one dynamic-graph pass (same for every runtime).
    meter = LayerMeter(model)
    with PhaseTimer():
        DynamicRunner(model).detect(make_batch())
    flops_per_batch, flops_by_phase = meter.flops, dict(meter.flops_by_phase)
    meter.count_flops = False
    dynamic = runtime in ("exact", "dynamic")
    if not dynamic:
        meter.remove()
    t_build = time.perf_counter()
    runner = build_runner(model, runtime)
    build_seconds = time.perf_counter() - t_build
    runtime = runner.runtime  # a Paddle Inference runtime that could not be built falls back to 'dynamic'
    if not dynamic and runtime in ("exact", "dynamic"):  # fell back: time the dynamic graph's layers again
        meter = LayerMeter(model)
        meter.count_flops = False
    dynamic = runtime in ("exact", "dynamic")
    model_phase = "model ({})".format(runner.kernels)

    def run_once(timer=None):
        t0 = time.perf_counter()
        batch = make_batch()
        t1 = time.perf_counter()
        if timer is not None:
            timer.add("preprocess", t1 - t0)
        dets = runner.detect(batch)
        t2 = time.perf_counter()
        if timer is not None and not dynamic:
            timer.add(model_phase, t2 - t1)
        detections_to_coco(dets, clsid2catid)
        _sync()
        if timer is not None:
            timer.add("to_coco_results", time.perf_counter() - t2)
        return time.perf_counter() - t0, dets

    for _ in range(warmup):
        run_once()
    latencies, cpu_secs, phase_runs, layer_secs, det_counts, layer_phase_runs = [], [], [], [], [], []
    for _ in range(iters):
        meter.seconds = 0.0
        meter.by_phase = {}
        c0 = time.process_time()
        with PhaseTimer() as timer:
            seconds, dets = run_once(timer)
        cpu_secs.append(time.process_time() - c0)
        latencies.append(seconds)
        layer_secs.append(meter.seconds)
        phase_runs.append(dict(timer.times))
        layer_phase_runs.append(dict(meter.by_phase))
        det_counts.append(float(np.mean([len(d["scores"]) for d in dets])))
    meter.remove()
    per_image = [t / batch_size for t in latencies]
    median = statistics.median(per_image)
    names = sorted({k for r in phase_runs for k in r}, key=_phase_order)
    phases = {k: statistics.median([r.get(k, 0.0) for r in phase_runs]) / batch_size * 1000 for k in names}
    result = dict(machine_info(device))
    threads = _threads()
    result.update(machine_description(threads))
    result.update({
        "config": cfg.get("filename"),
        "runtime": runtime,
        "kernels": runner.kernels,
        "runner_build_s": build_seconds,
        "image": image_file or "synthetic",
        "image_size": [h, w],
        "batch_size": batch_size,
        "iters": iters,
        "warmup": warmup,
        "weights": weights or "random (peaked scores, keep_top_k={})".format(num_dets),
        "detections_per_image": statistics.median(det_counts),
        "latency_ms": {"median": median * 1000, "min": min(per_image) * 1000, "max": max(per_image) * 1000},
        "cpu_seconds_per_image": statistics.median(cpu_secs) / batch_size,
        "images_per_s": 1.0 / median,
        "peak_rss_mb": _peak_rss_mb(),
        "gflops": flops_per_batch / batch_size / 1e9,
        "achieved_gflops_per_s": flops_per_batch / batch_size / 1e9 / median,
        "phases_ms": phases,
        "phase_gflops": {k: v / batch_size / 1e9 for k, v in flops_by_phase.items() if k},
    })
    # Which kernels each phase ran.
    if dynamic:
        mkl = os.environ.get("MKL_DEBUG_CPU_TYPE")
        conv_kernel = "native conv2d/matmul (MKL sgemm{})".format(", AVX2 dispatch forced" if mkl == "5" else "")
        result["phase_kernels"] = {k: (conv_kernel if flops_by_phase.get(k) else "native") for k in names
                                   if k not in ("preprocess", "to_coco_results")}
        result["phase_kernels"].update({"preprocess": "OpenCV/NumPy", "to_coco_results": "NumPy/pycocotools"})
        layer_median = statistics.median([s / t for s, t in zip(layer_secs, latencies)])
        # Per phase, the part outside convolutions / matrix products (where overhead lives).
        result["phases_overhead_ms"] = {k: statistics.median([r.get(k, 0.0) - lr.get(k, 0.0) for r, lr in
                                                               zip(phase_runs, layer_phase_runs)]) / batch_size * 1000
                                        for k in names}
        conv_ms = {k: statistics.median([lr.get(k, 0.0) for lr in layer_phase_runs]) / batch_size * 1000
                   for k in names}
        result["phase_conv_gflops_per_s"] = {k: flops_by_phase[k] / batch_size / 1e9 / (conv_ms[k] / 1000)
                                             for k in names if flops_by_phase.get(k) and conv_ms.get(k)}
        result["conv_matmul_ms"] = layer_median * median * 1000
        result["overhead_fraction"] = 1.0 - layer_median
        conv_rate = flops_per_batch / batch_size / 1e9 / (result["conv_matmul_ms"] / 1000)
    else:
        result["phase_kernels"] = {"preprocess": "OpenCV/NumPy", model_phase: runner.kernels + " (whole program)",
                                   "to_coco_results": "NumPy/pycocotools"}
        model_ms = phases.get(model_phase, 0.0)
        result["phase_gflops"] = {model_phase: flops_per_batch / batch_size / 1e9}
        result["phase_conv_gflops_per_s"] = {model_phase: flops_per_batch / batch_size / 1e9 / (model_ms / 1000)}
        result["conv_matmul_ms"] = None
        result["overhead_fraction"] = None  # not measurable inside a Paddle Inference program
        conv_rate = None
    result["phase_achieved_gflops_per_s"] = {k: flops_by_phase[k] / batch_size / 1e9 / (phases[k] / 1000)
                                             for k in names if flops_by_phase.get(k) and phases.get(k)}
    if not dynamic:
        result["phase_achieved_gflops_per_s"] = dict(result["phase_conv_gflops_per_s"])
    if peak:
        rates = measure_peak_rates(threads)
        attainable = rates["attainable"]["gflops_per_s"]
        result["peak_rates"] = rates
        result["fraction_of_attainable"] = result["achieved_gflops_per_s"] / attainable
        result["conv_fraction_of_attainable"] = conv_rate / attainable if conv_rate else None
    if device.startswith("gpu"):
        result["peak_gpu_memory_mb"] = paddle.device.cuda.max_memory_allocated() / 2 ** 20
    return result


def _threads():
    from .model_builder import cpu_threads

    return cpu_threads() or set_cpu_threads()


_ORDER = ["preprocess", "backbone_fpn", "semantic_head", "rpn", "box_stage0", "box_stage1", "box_stage2",
          "box_postprocess", "mask_roi_features", "mask_stage0", "mask_stage1", "mask_stage2", "mask_fusion",
          "mask_paste", "to_coco_results"]


def _phase_order(name):
    if name.startswith("model ("):  # a whole Paddle Inference program
        return _ORDER.index("backbone_fpn")
    return _ORDER.index(name) if name in _ORDER else len(_ORDER)


def _synthetic_train_batch(batch_size, image_size, num_classes, seed=0, semantic_classes=None):
    """A training batch with random images and 1-6 polygon objects per image (input scale), plus
    stride-8 semantic labels when the model has a semantic head."""
    rng = np.random.default_rng(seed)
    h, w = image_size
    hp, wp = int(np.ceil(h / 32) * 32), int(np.ceil(w / 32) * 32)
    batch = {
        "image": paddle.to_tensor(rng.normal(0, 1, (batch_size, 3, hp, wp)).astype(np.float32)),
        "im_shape": paddle.to_tensor(np.tile([h, w], (batch_size, 1)).astype(np.float32)),
        "scale_factor": paddle.to_tensor(np.ones((batch_size, 2), np.float32)),
        "gt_bbox": [], "gt_class": [], "gt_poly": [], "gt_segm": [],
    }
    for _ in range(batch_size):
        n = int(rng.integers(1, 7))
        wh = rng.uniform(0.05, 0.3, (n, 2)) * [w, h]
        xy = rng.uniform(0, 1, (n, 2)) * ([w, h] - wh)
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        polys = [[[b[0], b[1], b[2], b[1], b[2], b[3], b[0], b[3]]] for b in boxes.tolist()]
        batch["gt_bbox"].append(paddle.to_tensor(boxes))
        batch["gt_class"].append(paddle.to_tensor(rng.integers(0, num_classes, (n, 1)).astype(np.int32)))
        batch["gt_poly"].append(polys)
        masks = np.zeros((n, hp, wp), np.uint8)  # the reader's full-image bitmaps (rectangles here)
        for k, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(int)):
            masks[k, y1:y2, x1:x2] = 1
        batch["gt_segm"].append(paddle.to_tensor(masks))
    if semantic_classes:
        sem = rng.integers(0, semantic_classes, size=(batch_size, 1, hp // 8, wp // 8)).astype(np.int32)
        batch["semantic"] = paddle.to_tensor(sem)
    return batch


# (object path, attribute, phase name): training steps timed by wrapping them (no edit of the model code).
# Target assignment (RPN and RoI sampling: "target_assign") and the mask targets ("mask_targets") are phases
# of the model itself (utils.timing.phase inside it), so they are not wrapped here.
_TRAIN_STEP_HOOKS = (
    ("bbox_head", "stage_forward", "box_heads"),
    ("bbox_head", "_box_loss", "box_loss"),
    ("bbox_head.mask_head", "loss", "mask_heads"),
    ("fused_semantic_head", "loss", "semantic_loss"),
)
_TRAIN_LAYER_PHASES = (("rpn_head", "rpn"),)


def _resolve(root, path):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _instrument_training(model):
    """Phase timing around the trainer-visible steps of a training forward. Returns ``(undo, missing)``:
    a function restoring the model, and the steps that could not be hooked (renamed in the model code)."""
    undo, missing = [], []
    for path, name in _TRAIN_LAYER_PHASES:
        layer = _resolve(model, path)
        if layer is None:
            continue
        if not isinstance(layer, paddle.nn.Layer):
            missing.append("{} ({})".format(name, path))
            continue

        def pre(_layer, _inputs, name=name):
            timer = active_timer()
            if timer is not None:
                timer.push(name)

        def post(_layer, _inputs, _out):
            timer = active_timer()
            if timer is not None:
                timer.pop()

        undo += [layer.register_forward_pre_hook(pre).remove, layer.register_forward_post_hook(post).remove]
    for path, attr, name in _TRAIN_STEP_HOOKS:
        obj = _resolve(model, path)
        if obj is None:  # the config has no such module (e.g. no semantic head)
            continue
        fn = getattr(obj, attr, None)
        if fn is None or not callable(fn):
            missing.append("{} ({}.{})".format(name, path, attr))
            continue
        had_own = attr in vars(obj)

        def timed(*args, _fn=fn, _name=name, **kwargs):
            with phase(_name):
                return _fn(*args, **kwargs)

        try:
            object.__setattr__(obj, attr, timed)
        except (TypeError, AttributeError):
            missing.append("{} ({}.{})".format(name, path, attr))
            continue
        undo.append(lambda obj=obj, attr=attr, fn=fn, had_own=had_own:
                    object.__setattr__(obj, attr, fn) if had_own else object.__delattr__(obj, attr))

    def restore():
        for u in reversed(undo):
            u()

    return restore, missing


def benchmark_training(cfg, image_size=(800, 1333), batch_size=2, iters=5, warmup=2, device=None):
    """Training images/s on synthetic batches, and the median time per step phase: data (making the synthetic
    batch), forward by module (``backbone_fpn``, ``semantic_head``, ``rpn``, ``target_assign`` (RPN anchors
    and RoI sampling, the model's own phase), ``box_heads``, ``box_loss``, ``mask_targets`` (the model's own
    phase), ``mask_heads``, ``semantic_loss``, ``forward (other)``), ``backward`` and ``optimizer``."""
    from ..core import create

    device = select_device(cfg, device)
    paddle.seed(0)
    model = build_model(cfg)
    model.train()
    sem_classes = model.fused_semantic_head.conv_logits.weight.shape[0] if model.with_semantic else None
    sched = create("LearningRate", cfg)(1000)
    opt = create("OptimizerBuilder", cfg)(sched, model)
    num_classes = int(cfg.get("num_classes", 80))
    restore, missing = _instrument_training(model)
    times, phase_runs = [], []
    try:
        for i in range(warmup + iters):
            with PhaseTimer() as timer:
                t0 = time.perf_counter()
                with phase("data (synthetic batch)"):
                    batch = _synthetic_train_batch(batch_size, image_size, num_classes, seed=i % 2,
                                                   semantic_classes=sem_classes)
                with phase("forward (other)"):
                    losses = model(batch)
                with phase("backward"):
                    losses["loss"].backward()
                with phase("optimizer"):
                    opt.step()
                    opt.clear_grad()
                _sync()
                dt = time.perf_counter() - t0
            if i >= warmup:
                times.append(dt)
                phase_runs.append(dict(timer.times))
    finally:
        restore()
    med = statistics.median(times)
    names = []
    for r in phase_runs:
        names.extend(k for k in r if k not in names)
    phases = {k: statistics.median([r.get(k, 0.0) for r in phase_runs]) * 1000 for k in names}
    result = dict(machine_info(device))
    result.update({"config": cfg.get("filename"), "image_size": list(image_size), "batch_size": batch_size,
                   "iters": iters, "seconds_per_iter": {"median": med, "min": min(times), "max": max(times)},
                   "train_images_per_s": batch_size / med, "peak_rss_mb": _peak_rss_mb(),
                   "phases_ms": phases, "missing_hooks": missing})
    return result
