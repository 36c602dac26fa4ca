"""Box coders: how a regression head's ``(dx, dy, dw, dh)`` deltas map to boxes and back.

Two conventions compute the same idea with different arithmetic, and both are needed bit for bit:

* :class:`DeltaBBoxCoder` (PaddleDetection): deltas are *divided* by per-coordinate ``weights``
  (10, 10, 5, 5 ...); log-size deltas are clamped from above only; centres ``x1 + 0.5 w``.
* :class:`DeltaXYWHBBoxCoder` (mmdetection): deltas are *multiplied* by ``stds`` and shifted by
  ``means`` (0.1, 0.1, 0.2, 0.2 ...); log-size deltas are clamped on both sides; centres
  ``(x1 + x2) * 0.5`` and corners ``c -/+ w * 0.5``.

Every coder has ``encode(boxes, targets)``, ``decode(deltas, boxes)`` and ``decode_and_clip``; boxes are
``[x1, y1, x2, y2]`` without ``+1``. The formulas are evaluated in the order the respective reference
uses, because the last float32 bit decides borderline NMS and level choices.
"""
import math
from typing import List, Sequence

import paddle

from ..core import serializable
from . import box_utils
from ..errors import ConfigError

__all__ = ["DeltaBBoxCoder", "DeltaXYWHBBoxCoder", "build_box_coder"]

# log(1000 / 16): the largest log-scale change a delta may ask for.
LOG_SCALE_CLIP = math.log(1000.0 / 16)


class _Coder(object):
    def decode_and_clip(self, deltas, rois, rois_num, im_shape):
        """Decode ``deltas [R,4]`` on ``rois [R,4]`` and clip each box to its image ``im_shape [B,2]`` (h, w)."""
        boxes = self.decode(deltas, rois)
        hw = paddle.gather(im_shape.astype(boxes.dtype), box_utils.roi_image_index(rois_num))
        return box_utils.clip_boxes(boxes, hw)

    def __call__(self, deltas, rois, rois_num, im_shape):
        """As a post-processing decoder (``BBoxPostProcess.decode``): :meth:`decode_and_clip`."""
        return self.decode_and_clip(deltas, rois, rois_num, im_shape)


@serializable
class DeltaBBoxCoder(_Coder):
    """PaddleDetection's ``delta2bbox`` / ``bbox2delta`` with per-coordinate ``weights`` (divisors)."""

    def __init__(self, weights: List[float] = (10.0, 10.0, 5.0, 5.0)):
        if len(weights) != 4:
            raise ConfigError("DeltaBBoxCoder.weights needs 4 values (wx, wy, ww, wh), got {}".format(list(weights)))
        self.weights = [float(w) for w in weights]

    def decode(self, deltas, boxes):
        """``[R,4]`` deltas on ``[R,4]`` boxes; ``dw``/``dh`` clamped at ``log(1000/16)`` from above only."""
        return box_utils.delta2bbox(deltas, boxes, self.weights)

    def encode(self, boxes, targets):
        """Deltas that move ``boxes [R,4]`` onto ``targets [R,4]`` (times the weights)."""
        return box_utils.bbox2delta(boxes, targets, self.weights)

    def __repr__(self):
        return "DeltaBBoxCoder(weights={})".format(self.weights)


@serializable
class DeltaXYWHBBoxCoder(_Coder):
    """mmdetection's ``DeltaXYWHBBoxCoder``: ``d * stds + means``, log-size clamped to ``±log(1000/16)``.

    Decoding (SEMANTICS_MMDET §5.4, all float32, in this order)::

        dn = d * stds + means; pxy = (xy1 + xy2) * 0.5; pwh = xy2 - xy1
        gxy = pxy + pwh * dn[:2]; gwh = pwh * exp(clamp(dn[2:], -R, R))
        box = [gxy - gwh * 0.5, gxy + gwh * 0.5]
    """

    def __init__(self, target_means: List[float] = (0.0, 0.0, 0.0, 0.0),
                 target_stds: List[float] = (1.0, 1.0, 1.0, 1.0)):
        if len(target_means) != 4 or len(target_stds) != 4:
            raise ConfigError("DeltaXYWHBBoxCoder: target_means and target_stds need 4 values each, got {} and {}".format(
                list(target_means), list(target_stds)))
        self.means = [float(m) for m in target_means]
        self.stds = [float(s) for s in target_stds]

    def _consts(self, dtype):
        means = paddle.to_tensor(self.means, dtype=dtype) if paddle.in_dynamic_mode() else _const_row(self.means)
        stds = paddle.to_tensor(self.stds, dtype=dtype) if paddle.in_dynamic_mode() else _const_row(self.stds)
        return means, stds

    def decode(self, deltas, boxes):
        if box_utils.known_empty(boxes):
            return paddle.zeros([0, 4], dtype=deltas.dtype)
        means, stds = self._consts(deltas.dtype)
        dn = deltas * stds + means
        pxy = (boxes[:, :2] + boxes[:, 2:]) * 0.5
        pwh = boxes[:, 2:] - boxes[:, :2]
        dxy = pwh * dn[:, :2]
        dwh = paddle.clip(dn[:, 2:], min=-LOG_SCALE_CLIP, max=LOG_SCALE_CLIP)
        gxy = pxy + dxy
        gwh = pwh * paddle.exp(dwh)
        return paddle.concat([gxy - gwh * 0.5, gxy + gwh * 0.5], axis=1)

    def encode(self, boxes, targets):
        """``((gx-px)/pw, (gy-py)/ph, log(gw/pw), log(gh/ph))``, then ``(delta - means) / stds``."""
        if box_utils.known_empty(boxes):
            return paddle.zeros([0, 4], dtype=boxes.dtype)
        means, stds = self._consts(boxes.dtype)
        pxy = (boxes[:, :2] + boxes[:, 2:]) * 0.5
        pwh = boxes[:, 2:] - boxes[:, :2]
        gxy = (targets[:, :2] + targets[:, 2:]) * 0.5
        gwh = targets[:, 2:] - targets[:, :2]
        delta = paddle.concat([(gxy - pxy) / pwh, paddle.log(gwh / pwh)], axis=1)
        return (delta - means) / stds

    def __repr__(self):
        return "DeltaXYWHBBoxCoder(target_means={}, target_stds={})".format(self.means, self.stds)


def _const_row(values):
    """A ``[4]`` float32 constant in exported programs, built from scalar fills (no float-list attribute)."""
    return paddle.concat([paddle.full([1], float(v), dtype="float32") for v in values])


def build_box_coder(spec, default_weights: Sequence[float] = None):
    """A coder from a built object, a config spec (class name / ``!Tag`` / ``{name: ...}``) or, when
    ``spec`` is None, PaddleDetection's weights (``default_weights``)."""
    if spec is None:
        return DeltaBBoxCoder(default_weights if default_weights is not None else (10.0, 10.0, 5.0, 5.0))
    from ..core.config import build_component

    return build_component(spec, where="box coder")
