"""ppdet_htc: Hybrid Task Cascade instance segmentation for PaddlePaddle (PaddleDetection style)."""
from .version import __version__  # noqa: F401
from .runtime import apply_process_defaults as _apply_process_defaults

# Before Paddle's math library runs: the fast MKL code path on AMD CPUs (see ppdet_htc/runtime.py;
# PPDET_HTC_EXACT=1 or a user-set MKL_DEBUG_CPU_TYPE turns this off).
_apply_process_defaults()


def __getattr__(name):
    # Lazy so that `import ppdet_htc` (e.g. for the download utilities) does not import Paddle.
    if name == "Detector":
        from .engine.predictor import Detector

        return Detector
    raise AttributeError(name)
