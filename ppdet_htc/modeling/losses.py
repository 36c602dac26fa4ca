"""Elementwise regression losses (summed and normalised by the caller)."""
import paddle

from ..core import serializable

__all__ = ["L1Loss", "SmoothL1Loss", "build_loss", "softmax_cross_entropy"]


@serializable
class L1Loss(object):
    """``|d|`` per element."""

    def __call__(self, diff):
        return paddle.abs(diff)


@serializable
class SmoothL1Loss(object):
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``beta <= 0``: L1)."""

    def __init__(self, beta: float = 1.0):
        self.beta = float(beta)

    def __call__(self, diff):
        ad = paddle.abs(diff)
        if self.beta <= 0:
            return ad
        return paddle.where(ad < self.beta, 0.5 * ad * ad / self.beta, ad - 0.5 * self.beta)


def softmax_cross_entropy(logits, labels, axis=-1, ignore_index=None):
    """Per-element ``-log softmax(logits)[label]`` along ``axis``; 0 where ``labels == ignore_index``.

    ``labels`` has the shape of ``logits`` without ``axis``. Written with ``log_softmax`` and a gather
    because Paddle 2.6's ``F.cross_entropy`` checks the labels on the host (a GPU stall in every step).
    """
    logp = paddle.nn.functional.log_softmax(logits, axis=axis)
    labels = labels.astype("int64")
    valid = None
    if ignore_index is not None:
        valid = labels != ignore_index
        labels = paddle.where(valid, labels, paddle.zeros_like(labels))
    picked = -paddle.take_along_axis(logp, labels.unsqueeze(axis), axis=axis).squeeze(axis)
    if valid is not None:
        picked = picked * valid.astype(picked.dtype)
    return picked


def build_loss(spec, default_cls):
    """A loss from a built object, a config spec, or None (``default_cls()``)."""
    if spec is None:
        return default_cls()
    from ..core.config import build_component

    return build_component(spec, where=default_cls.__name__)
