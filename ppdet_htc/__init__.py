"""ppdet_htc: Hybrid Task Cascade instance segmentation for PaddlePaddle (PaddleDetection style)."""
from .version import __version__  # noqa: F401


def __getattr__(name):
    # Lazy so that `import ppdet_htc` (e.g. for the download utilities) does not import Paddle.
    if name == "Detector":
        from .engine.predictor import Detector

        return Detector
    raise AttributeError(name)
