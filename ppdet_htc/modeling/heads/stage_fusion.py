"""How the cascade's stages are combined at test time: class scores and mask probabilities.

Both PaddleDetection and mmdetection 2.x average the stages' *logits* before one softmax (averaging
probabilities would give other scores) and average the *sigmoid probabilities* of the mask stages;
mmdetection 3.x (a known bug, SEMANTICS_MMDET Quirk M12) keeps only the last mask stage, which
``MaskStageFusion(stages='last')`` reproduces for comparison with 3.x outputs.
"""
import paddle.nn.functional as F

from ...core import serializable
from ...errors import ConfigError

__all__ = ["MeanLogitsFusion", "MaskStageFusion", "build_fusion"]


@serializable
class MeanLogitsFusion(object):
    """``softmax((l_0 + l_1 + ... + l_{T-1}) / T)`` over the class axis (background included)."""

    def __call__(self, logits):
        total = logits[0]
        for lg in logits[1:]:  # left to right, as ((0 + l_0) + l_1) + l_2
            total = total + lg
        return F.softmax(total / float(len(logits)), axis=-1)


@serializable
class MaskStageFusion(object):
    """Per-detection mask probability from the stages' logits of the detection's class ``[K,M,M]``.

    ``stages='all'``: the mean of the stages' sigmoids (HTC paper, PaddleDetection, mmdetection 2.x);
    ``'last'``: the last stage's sigmoid only (mmdetection 3.x as released).
    """

    def __init__(self, stages: str = "all"):
        if stages not in ("all", "last"):
            raise ConfigError("MaskStageFusion.stages must be 'all' or 'last', got {!r}".format(stages))
        self.stages = stages

    @property
    def needs_all_stages(self):
        """Whether every stage's logits are needed (else only the last stage's)."""
        return self.stages == "all"

    def __call__(self, logits):
        if self.stages == "last":
            return F.sigmoid(logits[-1])
        total = F.sigmoid(logits[0])
        for lg in logits[1:]:
            total = total + F.sigmoid(lg)
        return total / float(len(logits))


def build_fusion(spec, default_cls):
    """A fusion object from a built object, a config spec, or None (``default_cls()``)."""
    if spec is None:
        return default_cls()
    from ...core.config import build_component

    return build_component(spec, where=default_cls.__name__)

