"""Process-level speed switches that must be decided before Paddle's math library runs (no Paddle import here).

Paddle's CPU wheel computes convolutions and matrix products with Intel MKL 2019 (``libmklml_intel.so``),
which picks its slowest generic code path on AMD processors. ``MKL_DEBUG_CPU_TYPE=5`` makes it use its
AVX2 kernels there (2-3x faster sgemm; results differ from the generic path only in rounding). MKL reads
the variable at its first computation, so it must be in the environment before then.

:func:`apply_process_defaults` (run by ``import ppdet_htc``) sets it on AMD CPUs with AVX2 unless

* the user already set ``MKL_DEBUG_CPU_TYPE`` (their value is kept), or
* ``PPDET_HTC_EXACT=1`` asks for the exact path (today's kernels and numerics).

:func:`use_exact_process` undoes our own setting (the CLI's ``--exact``); it is effective only before
the first convolution or matrix product of the process.

Threads: importing Paddle sets ``OMP_NUM_THREADS=1`` when it is unset, so reading that variable afterwards
cannot tell a user's choice from Paddle's default. :func:`user_omp_num_threads` returns the value seen
before Paddle was imported (``import ppdet_htc`` first records it).
"""
import os
import sys

__all__ = ["EXACT_ENV", "MKL_ENV", "cpu_info", "apply_process_defaults", "use_exact_process", "exact_requested",
           "process_switches", "user_omp_num_threads"]

EXACT_ENV = "PPDET_HTC_EXACT"
MKL_ENV = "MKL_DEBUG_CPU_TYPE"
_STATE = {"mkl_set_by_us": False, "omp_recorded": False, "omp": None}
_CPU_FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                          "amx_tile", "amx_bf16")


def _truthy(value):
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def exact_requested():
    """True when ``PPDET_HTC_EXACT`` asks for the exact path."""
    return _truthy(os.environ.get(EXACT_ENV, ""))


def cpu_info(path="/proc/cpuinfo"):
    """``{'vendor', 'model', 'flags' (the SIMD ones), 'cores'}`` of this machine (Linux; else partial)."""
    info = {"vendor": "", "model": "", "flags": [], "cores": os.cpu_count() or 1}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not info["vendor"]:
                    info["vendor"] = value.strip()
                elif key == "model name" and not info["model"]:
                    info["model"] = value.strip()
                elif key == "flags" and not info["flags"]:
                    flags = set(value.split())
                    info["flags"] = [f for f in _CPU_FLAGS_OF_INTEREST if f in flags]
                if info["vendor"] and info["model"] and info["flags"]:
                    break
    except OSError:
        import platform

        info["model"] = platform.processor()
    return info


def _record_user_threads():
    if not _STATE["omp_recorded"] and "paddle" not in sys.modules:
        _STATE["omp_recorded"] = True
        _STATE["omp"] = os.environ.get("OMP_NUM_THREADS")


def user_omp_num_threads():
    """``OMP_NUM_THREADS`` as the user set it (None if unset), judged from before Paddle's import; if Paddle was
    imported before ``ppdet_htc``, the current value."""
    if _STATE["omp_recorded"]:
        return _STATE["omp"]
    return os.environ.get("OMP_NUM_THREADS")


def apply_process_defaults(environ=None, info=None):
    """Set ``MKL_DEBUG_CPU_TYPE=5`` on AMD CPUs with AVX2 unless the user set it or asked for the exact
    path. Returns True when it was set by this call."""
    if environ is None:
        _record_user_threads()
    env = os.environ if environ is None else environ
    if MKL_ENV in env or _truthy(env.get(EXACT_ENV, "")):
        return False
    info = cpu_info() if info is None else info
    if info["vendor"] != "AuthenticAMD" or "avx2" not in info["flags"]:
        return False
    env[MKL_ENV] = "5"
    if environ is None:
        _STATE["mkl_set_by_us"] = True
    return True


def use_exact_process():
    """Ask for the exact path for this process and its children: sets ``PPDET_HTC_EXACT=1`` and removes the
    MKL switch if :func:`apply_process_defaults` set it (a value the user set is left alone)."""
    os.environ[EXACT_ENV] = "1"
    if _STATE["mkl_set_by_us"]:
        os.environ.pop(MKL_ENV, None)
        _STATE["mkl_set_by_us"] = False


def process_switches():
    """What this process runs with, for reports: ``{'exact', 'mkl_debug_cpu_type', 'mkl_set_by_ppdet_htc'}``."""
    return {"exact": exact_requested(), "mkl_debug_cpu_type": os.environ.get(MKL_ENV),
            "mkl_set_by_ppdet_htc": _STATE["mkl_set_by_us"]}
