#!/usr/bin/env python
"""Standalone HTC predictor for a model exported by ``scripts/export_model.py``.

Uses only Paddle Inference (``paddle.inference``), numpy and OpenCV (plus pycocotools to write mask RLEs),
not the ppdet_htc model code, so the ``deploy/`` folder and the exported model directory are all a
deployment needs. Preprocessing is read from ``infer_cfg.yml`` and reproduces the training-side numerics
(cv2 decode to RGB, keep-ratio resize with cv2, ``x/255`` then mean/std, CHW, zero padding to a stride).

    python deploy/python/infer.py --model_dir output_inference/htc --image_file a.jpg [--device GPU]
        [--output_dir out] [--run_benchmark] [--cpu_threads 2] [--engine onednn|openvino|native] [--exact]
        [--trt_precision fp16]

On the CPU the default engine is oneDNN (detections within box IoU 0.98 / score 0.005 of the exact path;
several times faster); ``--exact`` runs Paddle's native kernels with MKL's default dispatch, which give the
dynamic model's numbers. On AMD CPUs with AVX2 the script sets ``MKL_DEBUG_CPU_TYPE=5`` before Paddle loads
(MKL's AVX2 kernels instead of its generic ones) unless ``--exact`` is given or the variable is already set.

``--output_dir`` gets one drawn picture per image and ``results.json`` with the same records as
``scripts/infer.py`` (``image_id``, ``category_id``, ``bbox`` [x, y, w, h], ``score``, ``segmentation``
RLE, ``file_name``), so the two can be compared directly.
"""
import argparse
import json
import os
import statistics
import sys
import time
import warnings

import cv2
import numpy as np
import yaml

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

if os.environ.get("PPDET_HTC_DEBUG", "").strip().lower() in ("", "0", "false", "no", "off"):
    # Paddle's import warns about ccache (only relevant for compiling custom operators) and its C++ core logs
    # INFO/WARNING lines; PPDET_HTC_DEBUG=1 shows them.
    warnings.filterwarnings("ignore", message=r"No ccache found")
    os.environ.setdefault("GLOG_minloglevel", "2")


# ----------------------------------------------------------------------------------------- preprocessing


def decode_image(path):
    if not os.path.isfile(path):
        raise FileNotFoundError("image file not found: {}".format(path))
    data = np.fromfile(path, dtype=np.uint8)
    im = cv2.imdecode(data, 1) if data.size else None
    if im is None:
        raise ValueError("cannot decode image (corrupt or not an image): {}".format(path))
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


class Preprocess(object):
    """The ``Preprocess`` steps of infer_cfg.yml applied to one RGB uint8 image."""

    def __init__(self, steps):
        self.steps = steps

    def __call__(self, image):
        im = image
        im_shape = np.array(im.shape[:2], dtype=np.float32)
        scale = np.array([1.0, 1.0], dtype=np.float32)
        stride = 0
        for step in self.steps:
            kind = step["type"]
            if kind == "Resize":
                im, im_shape, scale = self._resize(im, step)
            elif kind == "NormalizeImage":
                im = im.astype(np.float32, copy=True)
                if step.get("is_scale", True):
                    im *= np.float32(1.0 / 255.0)
                if step.get("float32_arithmetic", False):  # mmdetection: (x - mean) / std in float32
                    im = (im - np.array(step["mean"], dtype=np.float32)) / np.array(step["std"], dtype=np.float32)
                else:
                    im -= np.array(step["mean"], dtype=np.float64)[None, None, :]
                    im /= np.array(step["std"], dtype=np.float64)[None, None, :]
            elif kind == "Permute":
                im = np.ascontiguousarray(im.transpose((2, 0, 1)))
            elif kind == "PadStride":
                stride = int(step.get("stride", 0))
            else:
                raise ValueError("infer_cfg.yml: unknown preprocessing step {!r}".format(kind))
        c, h, w = im.shape
        if stride > 0:
            hp, wp = int(np.ceil(h / stride) * stride), int(np.ceil(w / stride) * stride)
            padded = np.zeros((c, hp, wp), dtype=np.float32)
            padded[:, :h, :w] = im
            im = padded
        return im.astype(np.float32), im_shape, scale

    @staticmethod
    def _resize(im, step):
        h, w = im.shape[:2]
        target = step["target_size"]
        if step.get("keep_ratio", True):
            s = min(float(min(target)) / min(h, w), float(max(target)) / max(h, w))
            sy = sx = s
            rh, rw = s * float(h), s * float(w)
            if step.get("scale_from_size", False):  # mmdetection: integer size first, per-axis factors
                rh, rw = float(int(h * s + 0.5)), float(int(w * s + 0.5))
                sy, sx = rh / h, rw / w
        else:
            sy, sx = float(target[0]) / h, float(target[1]) / w
            rh, rw = float(target[0]), float(target[1])
        if step.get("scale_from_size", False):
            out = cv2.resize(im, (int(rw), int(rh)), interpolation=int(step.get("interp", 1)))
        else:
            out = cv2.resize(im, None, None, fx=sx, fy=sy, interpolation=int(step.get("interp", 1)))
        return out.astype(np.float32), np.array([rh, rw], np.float32), np.array([sy, sx], np.float32)


# ----------------------------------------------------------------------------------------- predictor


def prefer_fast_mkl_on_amd(environ=os.environ, cpuinfo="/proc/cpuinfo"):
    """``MKL_DEBUG_CPU_TYPE=5`` on AMD CPUs with AVX2 (must happen before Paddle's first computation);
    a value already set is kept. Returns True when set here."""
    if "MKL_DEBUG_CPU_TYPE" in environ:
        return False
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    if "AuthenticAMD" not in text or "avx2" not in flags:
        return False
    environ["MKL_DEBUG_CPU_TYPE"] = "5"
    return True


ENGINES = ("onednn", "openvino", "native")


def create_predictor(model_dir, device="CPU", cpu_threads=None, enable_mkldnn=False, trt_precision=None,
                     gpu_mem_mb=500, engine=None):
    """``engine`` (CPU): 'onednn', 'openvino' or 'native' (default: 'onednn' if ``enable_mkldnn`` else 'native')."""
    from paddle import inference

    params = os.path.join(model_dir, "model.pdiparams")
    program = None
    for name in ("model.json", "model.pdmodel"):  # PIR program (Paddle >= 3) or legacy program
        if os.path.isfile(os.path.join(model_dir, name)):
            program = os.path.join(model_dir, name)
            break
    if program is None or not os.path.isfile(params):
        raise FileNotFoundError("{} does not hold an exported model (model.json or model.pdmodel + model.pdiparams); "
                                "run scripts/export_model.py first".format(model_dir))
    config = inference.Config(program, params)
    if device.upper() == "GPU":
        config.enable_use_gpu(gpu_mem_mb, 0)
        if trt_precision:
            precision = {"fp32": inference.PrecisionType.Float32, "fp16": inference.PrecisionType.Half,
                         "int8": inference.PrecisionType.Int8}[trt_precision.lower()]
            config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=1, min_subgraph_size=3,
                                          precision_mode=precision, use_static=False, use_calib_mode=False)
    else:
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(int(cpu_threads or os.cpu_count() or 1))
        engine = engine or ("onednn" if enable_mkldnn else "native")
        if engine not in ENGINES:
            raise ValueError("engine must be one of {}, got {!r}".format(ENGINES, engine))
        if engine == "onednn":
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(16)  # one primitive cache per input shape (images vary)
        elif hasattr(config, "disable_mkldnn"):  # Paddle 3 turns oneDNN on by default on the CPU
            config.disable_mkldnn()
        if engine == "openvino":
            if not hasattr(config, "enable_openvino_engine"):
                raise ValueError("--engine openvino needs Paddle >= 3 (Paddle Inference's OpenVINO engine)")
            config.enable_openvino_engine(inference.PrecisionType.Float32)
    config.disable_glog_info()
    config.switch_ir_optim(True)
    return inference.create_predictor(config)


def run(predictor, image, im_shape, scale):
    inputs = {"image": image[None], "im_shape": im_shape[None], "scale_factor": scale[None]}
    for name in predictor.get_input_names():
        if name not in inputs:
            raise KeyError("the exported model expects an input {!r} this script does not know".format(name))
        handle = predictor.get_input_handle(name)
        handle.reshape(inputs[name].shape)
        handle.copy_from_cpu(np.ascontiguousarray(inputs[name]))
    predictor.run()
    outs = [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]
    bbox, masks = outs[0], (outs[2] if len(outs) > 2 else None)  # outs[1] (bbox_num) counts the rows
    # The program always ends with a placeholder row (score -1) so that no tensor is ever empty.
    keep = bbox[:, 1] >= 0
    bbox = bbox[keep]
    masks = masks[keep] if masks is not None else None
    return bbox, np.array([len(bbox)], dtype=np.int32), masks


# ----------------------------------------------------------------------------------------- output


def to_records(image_id, file_name, bbox, masks, category_ids):
    """COCO result records (same fields and numerics as scripts/infer.py)."""
    if len(bbox) == 0:
        return []
    try:
        import pycocotools.mask as mask_util
    except ImportError:
        raise ImportError("writing results.json needs pycocotools (pip install pycocotools)") from None
    rles = None
    if masks is not None:
        rles = mask_util.encode(np.asfortranarray(np.transpose(masks != 0, (1, 2, 0)), dtype=np.uint8))
    records = []
    for i, row in enumerate(bbox):
        label = int(row[0])
        x1, y1, x2, y2 = row[2:6].tolist()
        rec = {"image_id": image_id, "category_id": int(category_ids[label]), "bbox": [x1, y1, x2 - x1, y2 - y1],
               "score": float(row[1]), "file_name": os.path.basename(file_name)}
        if rles is not None:
            rle = rles[i]
            rec["segmentation"] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("utf-8")}
        records.append(rec)
    return records


def draw(image_rgb, bbox, masks, labels, threshold):
    """Translucent masks, boxes and 'name score' labels for detections with score >= threshold."""
    canvas = image_rgb.astype(np.float32)
    rng = np.random.default_rng(0)
    colors = rng.integers(40, 255, size=(max(len(labels), 1), 3)).astype(np.float32)
    keep = [i for i in range(len(bbox)) if bbox[i, 1] >= threshold]
    for i in keep:
        c = colors[int(bbox[i, 0]) % len(colors)]
        if masks is not None:
            m = masks[i].astype(bool)
            canvas[m] = canvas[m] * 0.5 + c * 0.5
    out = np.clip(canvas, 0, 255).astype(np.uint8)
    for i in keep:
        c = tuple(int(v) for v in colors[int(bbox[i, 0]) % len(colors)])
        x1, y1, x2, y2 = [int(round(v)) for v in bbox[i, 2:6]]
        cv2.rectangle(out, (x1, y1), (x2, y2), c, 2)
        text = "{} {:.2f}".format(labels[int(bbox[i, 0])], bbox[i, 1])
        cv2.putText(out, text, (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1, cv2.LINE_AA)
    return out


def list_images(image_file, image_dir):
    paths = []
    if image_file:
        paths.append(image_file)
    if image_dir:
        if not os.path.isdir(image_dir):
            raise FileNotFoundError("--image_dir: folder not found: {}".format(image_dir))
        paths += sorted(os.path.join(image_dir, f) for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise ValueError("give --image_file or --image_dir")
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", required=True, help="folder written by scripts/export_model.py")
    p.add_argument("--image_file", default=None)
    p.add_argument("--image_dir", default=None)
    p.add_argument("--device", default="CPU", choices=["CPU", "GPU", "cpu", "gpu"])
    p.add_argument("--output_dir", default=None, help="write drawn pictures and results.json here")
    p.add_argument("--threshold", type=float, default=None, help="draw threshold (default: infer_cfg.yml)")
    p.add_argument("--cpu_threads", type=int, default=None)
    p.add_argument("--engine", default=None, choices=ENGINES,
                   help="CPU kernels (default: onednn; --exact: native)")
    p.add_argument("--exact", action="store_true",
                   help="Paddle's native kernels and MKL's default dispatch: the dynamic model's numbers")
    p.add_argument("--enable_mkldnn", action="store_true", help="same as --engine onednn (the default)")
    p.add_argument("--trt_precision", default=None, choices=["fp32", "fp16", "int8"], help="TensorRT on GPU")
    p.add_argument("--run_benchmark", action="store_true", help="time repeated runs of the first image")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    if args.exact and args.engine not in (None, "native"):
        p.error("--exact runs the native kernels; it cannot be combined with --engine {}".format(args.engine))
    engine = "native" if args.exact else (args.engine or "onednn")
    if not args.exact:
        prefer_fast_mkl_on_amd()

    with open(os.path.join(args.model_dir, "infer_cfg.yml")) as f:
        infer_cfg = yaml.safe_load(f)
    preprocess = Preprocess(infer_cfg["Preprocess"])
    labels = infer_cfg["label_list"]
    category_ids = infer_cfg.get("category_ids") or list(range(1, len(labels) + 1))
    threshold = args.threshold if args.threshold is not None else float(infer_cfg.get("draw_threshold", 0.5))
    predictor = create_predictor(args.model_dir, args.device, args.cpu_threads, trt_precision=args.trt_precision,
                                 engine=engine)
    images = list_images(args.image_file, args.image_dir)
    records, timings = [], {"preprocess": [], "inference": [], "postprocess": []}
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    for image_id, path in enumerate(images):
        t0 = time.perf_counter()
        rgb = decode_image(path)
        tensor, im_shape, scale = preprocess(rgb)
        t1 = time.perf_counter()
        bbox, bbox_num, masks = run(predictor, tensor, im_shape, scale)
        t2 = time.perf_counter()
        h, w = rgb.shape[:2]
        if masks is not None:
            masks = masks[:, :h, :w]
        recs = to_records(image_id, path, bbox, masks, category_ids)
        records += recs
        if args.output_dir:
            out = os.path.join(args.output_dir, os.path.basename(path))
            cv2.imwrite(out, cv2.cvtColor(draw(rgb, bbox, masks, labels, threshold), cv2.COLOR_RGB2BGR))
        t3 = time.perf_counter()
        for k, v in (("preprocess", t1 - t0), ("inference", t2 - t1), ("postprocess", t3 - t2)):
            timings[k].append(v * 1000)
        print("{}: {} detections ({} with score >= {:.2f}) in {:.1f} ms".format(
            path, len(bbox), int((bbox[:, 1] >= threshold).sum()) if len(bbox) else 0, threshold,
            (t3 - t0) * 1000))
    if args.output_dir:
        tmp = os.path.join(args.output_dir, ".results.json.tmp")
        with open(tmp, "w") as f:
            json.dump(records, f)
        os.replace(tmp, os.path.join(args.output_dir, "results.json"))
    if args.run_benchmark:
        rgb = decode_image(images[0])
        tensor, im_shape, scale = preprocess(rgb)
        for _ in range(2):
            run(predictor, tensor, im_shape, scale)
        runs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            run(predictor, tensor, im_shape, scale)
            runs.append((time.perf_counter() - t) * 1000)
        print("benchmark ({} on {}): inference median {:.1f} ms, min {:.1f}, max {:.1f} over {} runs".format(
            images[0], args.device.upper(), statistics.median(runs), min(runs), max(runs), args.repeats))
    for k, v in timings.items():
        print("{:<12s} median {:.1f} ms".format(k, statistics.median(v)))
    return records


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
