"""The machine's attainable FP32 rate, measured: large sgemm with NumPy's BLAS and with Paddle's kernels
(dynamic graph: native conv / MKL sgemm; Paddle Inference: oneDNN), plus a description of the machine.

The benchmark divides the model's achieved GFLOP/s by the best of these rates. Every rate is the best of a
few repetitions (on a shared machine the best run is the least disturbed one) and is also given per CPU
second of this process (``*_per_cpu_s``: FLOPs / (process CPU time / threads), much less sensitive to other
processes than wall time).
"""
import inspect
import os
import platform
import shutil
import tempfile
import time

import numpy as np
import paddle

__all__ = ["machine_description", "measure_peak_rates", "numpy_blas"]


def numpy_blas():
    """Name of NumPy's BLAS (e.g. 'scipy-openblas') and the OpenBLAS environment overrides in force."""
    name = "unknown"
    try:
        cfg = np.show_config(mode="dicts")
        name = cfg["Build Dependencies"]["blas"]["name"]
    except Exception:  # NumPy < 1.26 has no mode='dicts'
        pass
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS")
           if k in os.environ}
    return {"name": name, "env": env}


def machine_description(threads=None):
    """CPU model, vendor, SIMD flags, cores, Paddle's CPU threads and the process-level switches."""
    import paddle

    from ..runtime import cpu_info, process_switches

    info = cpu_info()
    return {"cpu": info["model"] or platform.processor() or "unknown CPU", "cpu_vendor": info["vendor"],
            "cpu_flags": info["flags"], "cpu_cores": info["cores"], "threads": threads,
            "paddle_version": paddle.__version__, "python": platform.python_version(),
            "process_switches": process_switches(), "numpy_blas": numpy_blas()}


def _best(fn, reps):
    """(best wall seconds, CPU seconds of the best run) over ``reps`` runs after one warm-up."""
    fn()
    best, best_cpu = float("inf"), 0.0
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        t, c = time.perf_counter() - t0, time.process_time() - c0
        if t < best:
            best, best_cpu = t, c
    return best, best_cpu


def _rate(flops, secs, cpu, threads):
    return {"gflops_per_s": flops / secs / 1e9, "gflops_per_cpu_s": flops / max(cpu / threads, 1e-9) / 1e9,
            "seconds": secs}


class _MatmulConv(paddle.nn.Layer):
    """A two-op program: one large matmul and one 3x3 convolution."""

    def __init__(self, c):
        super().__init__()
        self.conv = paddle.nn.Conv2D(c, c, 3, padding=1)

    def forward(self, a, x):
        return paddle.matmul(a, a), self.conv(x)


def _inference_rates(threads, n, conv_shape, reps):
    """oneDNN sgemm and conv through Paddle Inference (a two-op program traced here)."""
    from .runtimes import create_inference_predictor

    c, h, w = conv_shape
    tmp = tempfile.mkdtemp(prefix="ppdet_htc_rates_")
    try:
        layer = _MatmulConv(c)
        layer.eval()
        spec = [paddle.static.InputSpec([n, n], "float32", "a"), paddle.static.InputSpec([1, c, h, w], "float32", "x")]
        kwargs = {"input_spec": spec}
        if "full_graph" in inspect.signature(paddle.jit.to_static).parameters:
            kwargs["full_graph"] = True
        paddle.jit.save(paddle.jit.to_static(layer, **kwargs), os.path.join(tmp, "model"))
        pred = create_inference_predictor(tmp, "onednn", threads)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((n, n)).astype(np.float32), "x": rng.standard_normal((1, c, h, w)).astype(np.float32)}
    small = {"a": np.zeros((8, 8), np.float32), "x": np.zeros((1, c, 8, 8), np.float32)}

    def run(which):
        for name in pred.get_input_names():
            arr = feeds[name] if name == which else small[name]
            handle = pred.get_input_handle(name)
            handle.reshape(arr.shape)
            handle.copy_from_cpu(arr)
        pred.run()

    return _best(lambda: run("a"), reps), _best(lambda: run("x"), reps)


def measure_peak_rates(threads=2, n=2048, conv_shape=(256, 100, 168), reps=4, inference=True):
    """``{'numpy_sgemm', 'paddle_matmul', 'paddle_conv2d', 'onednn_sgemm', 'onednn_conv2d', 'attainable'}``."""
    out = {}
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    mm_flops = 2.0 * n ** 3
    out["numpy_sgemm"] = _rate(mm_flops, *_best(lambda: a @ a, reps), threads)
    out["numpy_sgemm"]["kernel"] = "NumPy BLAS ({})".format(numpy_blas()["name"])
    t = paddle.to_tensor(a)
    out["paddle_matmul"] = _rate(mm_flops, *_best(lambda: paddle.matmul(t, t).numpy(), reps), threads)
    out["paddle_matmul"]["kernel"] = "Paddle dynamic matmul (MKL sgemm, MKL_DEBUG_CPU_TYPE={})".format(
        os.environ.get("MKL_DEBUG_CPU_TYPE", "unset"))
    c, h, w = conv_shape
    conv_flops = 2.0 * c * c * 9 * h * w
    conv = paddle.nn.Conv2D(c, c, 3, padding=1)
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((1, c, h, w)).astype(np.float32))
    with paddle.no_grad():
        out["paddle_conv2d"] = _rate(conv_flops, *_best(lambda: conv(x).numpy(), max(2, reps // 2)), threads)
    out["paddle_conv2d"]["kernel"] = "Paddle dynamic conv2d (native im2col + MKL sgemm)"
    if inference:
        try:
            (mm, mm_cpu), (cv, cv_cpu) = _inference_rates(threads, n, conv_shape, reps)
            out["onednn_sgemm"] = dict(_rate(mm_flops, mm, mm_cpu, threads), kernel="Paddle Inference + oneDNN matmul")
            out["onednn_conv2d"] = dict(_rate(conv_flops, cv, cv_cpu, threads), kernel="Paddle Inference + oneDNN conv2d")
        except Exception as e:  # e.g. Paddle without oneDNN
            out["onednn_error"] = "{}: {}".format(type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    rates = {k: v["gflops_per_s"] for k, v in out.items() if isinstance(v, dict) and "gflops_per_s" in v}
    best = max(rates, key=rates.get)
    out["attainable"] = {"gflops_per_s": rates[best], "from": best,
                         "gflops_per_cpu_s": max(v["gflops_per_cpu_s"] for v in out.values()
                                                 if isinstance(v, dict) and "gflops_per_cpu_s" in v)}
    return out
