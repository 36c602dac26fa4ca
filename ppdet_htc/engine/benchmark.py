"""Measure inference latency (with a per-phase breakdown) and training throughput of a config.

Everything is measured, nothing estimated: wall time per iteration after warm-up (median/min/max), the
time inside convolutions and matrix products (forward hooks on Conv2D / Conv2DTranspose / Linear, device
synchronised), their FLOPs, peak memory (RSS, and GPU memory on GPU), and named phases from
``utils.timing.phase``. ``overhead_fraction`` = 1 - (conv + matmul time) / end-to-end time.
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
from ..utils.timing import PhaseTimer, active_timer
from .model_builder import build_model, load_model_weights, select_device
from .outputs import split_outputs

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
            self.flops += _layer_flops(layer, inputs[0], output)

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


def _force_detections(model, num_dets, seed=0):
    """Random-weight runs: make the outputs look like a trained model's so that every phase does its real
    amount of work. Every RoI gets one random class with probability 0.95 (the others stay below NMS's
    0.001 threshold), so NMS sees one candidate per RoI and ``keep_top_k = num_dets`` fixes the detection
    count. Only parameters and the final class probabilities are changed; all computation runs as usual."""
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
    gen = np.random.default_rng(seed)

    def predict_with_peaked_scores(*args, **kwargs):
        probs, deltas, rois = predict(*args, **kwargs)
        cls = paddle.to_tensor(gen.integers(0, num_classes, size=probs.shape[0]).astype("int64"))
        onehot = paddle.nn.functional.one_hot(cls, num_classes + 1).astype(probs.dtype)
        return onehot * 0.95 + (1 - onehot) * (0.05 / num_classes), deltas, rois

    head.predict = predict_with_peaked_scores
    model.bbox_post_process.nms.keep_top_k = int(num_dets)


def benchmark_inference(cfg, image_size=(800, 1333), batch_size=1, iters=10, warmup=2, num_dets=100,
                        use_weights=False, device=None, progress=True, image_file=None):
    """Latency and phase breakdown of ``predict`` (preprocessing, model, conversion to COCO results).

    ``image_file``: time this real image (each of the ``batch_size`` slots) instead of synthetic ones.
    """
    device = select_device(cfg, device)
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

    def run_once(timer=None):
        t0 = time.perf_counter()
        samples = []
        for i, im in enumerate(images):
            s = {"image": im, "im_file": "synthetic", "im_id": np.array([i], dtype=np.int64)}
            for op in sample_ops:
                s = op(s)
            samples.append(s)
        for op in batch_ops:
            samples = op(samples)
        batch = collate(samples)
        if timer is not None:
            timer.add("preprocess", time.perf_counter() - t0)
        with paddle.no_grad():
            out = model({k: batch[k] for k in MODEL_INPUTS})
        t1 = time.perf_counter()
        dets = split_outputs(out, batch["im_id"], model.mask_post_process)
        detections_to_coco(dets, clsid2catid)
        _sync()
        if timer is not None:
            timer.add("to_coco_results", time.perf_counter() - t1)
        return time.perf_counter() - t0, dets

    meter = LayerMeter(model)
    for _ in range(warmup):
        meter.count_flops = True
        meter.flops = 0
        run_once()
    flops_per_batch = meter.flops
    meter.count_flops = False
    latencies, phase_runs, layer_secs, det_counts, layer_phase_runs = [], [], [], [], []
    for _ in range(iters):
        meter.seconds = 0.0
        meter.by_phase = {}
        with PhaseTimer() as timer:
            seconds, dets = run_once(timer)
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
    # Per phase, the part outside convolutions / matrix products (where overhead lives).
    phase_overhead = {k: statistics.median([r.get(k, 0.0) - lr.get(k, 0.0) for r, lr in
                                            zip(phase_runs, layer_phase_runs)]) / batch_size * 1000 for k in names}
    layer_median = statistics.median([s / t for s, t in zip(layer_secs, latencies)])
    result = dict(machine_info(device))
    result.update({
        "config": cfg.get("filename"),
        "image": image_file or "synthetic",
        "image_size": [h, w],
        "batch_size": batch_size,
        "iters": iters,
        "warmup": warmup,
        "weights": weights or "random (peaked scores, keep_top_k={})".format(num_dets),
        "detections_per_image": statistics.median(det_counts),
        "latency_ms": {"median": median * 1000, "min": min(per_image) * 1000, "max": max(per_image) * 1000},
        "images_per_s": 1.0 / median,
        "peak_rss_mb": _peak_rss_mb(),
        "gflops": flops_per_batch / batch_size / 1e9,
        "achieved_gflops_per_s": flops_per_batch / batch_size / 1e9 / median,
        "conv_matmul_ms": layer_median * median * 1000,
        "overhead_fraction": 1.0 - layer_median,
        "phases_ms": phases,
        "phases_overhead_ms": phase_overhead,
    })
    if device.startswith("gpu"):
        result["peak_gpu_memory_mb"] = paddle.device.cuda.max_memory_allocated() / 2 ** 20
    return result


_ORDER = ["preprocess", "backbone_fpn", "semantic_head", "rpn", "box_stage0", "box_stage1", "box_stage2",
          "box_postprocess", "mask_roi_features", "mask_stage0", "mask_stage1", "mask_stage2", "mask_paste",
          "to_coco_results"]


def _phase_order(name):
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


def benchmark_training(cfg, image_size=(800, 1333), batch_size=2, iters=5, warmup=2, device=None):
    """Training images/s on synthetic batches (model forward + losses + backward + optimizer step)."""
    from ..core import create

    device = select_device(cfg, device)
    paddle.seed(0)
    model = build_model(cfg)
    model.train()
    sem_classes = model.fused_semantic_head.conv_logits.weight.shape[0] if model.with_semantic else None
    sched = create("LearningRate", cfg)(1000)
    opt = create("OptimizerBuilder", cfg)(sched, model)
    num_classes = int(cfg.get("num_classes", 80))
    batches = [_synthetic_train_batch(batch_size, image_size, num_classes, seed=i, semantic_classes=sem_classes)
               for i in range(2)]
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        losses = model(batches[i % 2])
        losses["loss"].backward()
        opt.step()
        opt.clear_grad()
        _sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    result = dict(machine_info(device))
    result.update({"config": cfg.get("filename"), "image_size": list(image_size), "batch_size": batch_size,
                   "iters": iters, "seconds_per_iter": {"median": med, "min": min(times), "max": max(times)},
                   "train_images_per_s": batch_size / med, "peak_rss_mb": _peak_rss_mb()})
    return result
