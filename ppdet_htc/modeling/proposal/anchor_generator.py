"""Anchors for every FPN level: one size per level, several aspect ratios, centres on the stride grid."""
import math
from typing import List

import numpy as np
import paddle
import paddle.nn as nn

from ...core import register
from ...errors import ConfigError

__all__ = ["AnchorGenerator"]


@register
class AnchorGenerator(nn.Layer):
    """Cell anchors ``[-w/2, -h/2, w/2, h/2]`` of size s and ratio r = h/w, shifted over the stride grid.

    For a feature map of ``H x W`` at stride ``t`` the anchor of cell (i, j) and index a is the cell
    anchor shifted by ``(j*t + offset*t, i*t + offset*t)``; flattened order is ``(i*W + j)*A + a``.

    ``rounding`` picks the arithmetic of the cell anchors (the same sizes up to the last float bit):
    ``'paddle'``: ``w = sqrt(s^2/r)``, ``h = r*w`` in float64, then float32 (PaddleDetection);
    ``'mmdet'``: float32 ``hr = sqrt(r)``, ``wr = 1/hr``, ``w = (t*wr)*(s/t)``, ``h = (t*hr)*(s/t)``
    (mmdetection's ``AnchorGenerator`` with base size = stride and scale s/t, SEMANTICS_MMDET §5.2).
    """

    def __init__(
        self,
        anchor_sizes: List = (32, 64, 128, 256, 512),
        aspect_ratios: List = (0.5, 1.0, 2.0),
        strides: List[float] = (4.0, 8.0, 16.0, 32.0, 64.0),
        variance: List[float] = (1.0, 1.0, 1.0, 1.0),
        offset: float = 0.0,
        rounding: str = "paddle",
    ):
        super().__init__()
        if rounding not in ("paddle", "mmdet"):
            raise ConfigError("AnchorGenerator.rounding must be 'paddle' or 'mmdet', got {!r}".format(rounding))
        sizes = list(anchor_sizes)
        if sizes and not isinstance(sizes[0], (list, tuple)):
            sizes = [[s] for s in sizes]
        ratios = list(aspect_ratios)
        if ratios and not isinstance(ratios[0], (list, tuple)):
            ratios = [ratios] * len(sizes)
        if len(ratios) != len(sizes):
            raise ConfigError(
                "AnchorGenerator: {} anchor size groups but {} aspect-ratio groups".format(len(sizes), len(ratios))
            )
        if len(strides) != len(sizes):
            raise ConfigError(
                "AnchorGenerator: {} anchor size groups but {} strides; give one stride per FPN level".format(
                    len(sizes), len(strides)
                )
            )
        self.anchor_sizes = sizes
        self.aspect_ratios = ratios
        self.strides = [float(s) for s in strides]
        self.variance = list(variance)
        self.offset = float(offset)
        self.rounding = rounding
        if rounding == "mmdet":
            self.cell_anchors = [self._cell_anchors_mmdet(s, r, t) for s, r, t in zip(sizes, ratios, self.strides)]
        else:
            self.cell_anchors = [self._cell_anchors(s, r) for s, r in zip(sizes, ratios)]

    @staticmethod
    def _cell_anchors_mmdet(sizes, ratios, stride):
        """Ratio-major for one scale per level, as mmdetection (one size per level in HTC's configs)."""
        f32 = np.float32
        hr = np.sqrt(np.asarray(ratios, dtype=f32))
        wr = f32(1.0) / hr
        anchors = []
        for size in sizes:
            scale = f32(float(size) / float(stride))
            ws = (f32(stride) * wr) * scale
            hs = (f32(stride) * hr) * scale
            anchors.append(np.stack([f32(-0.5) * ws, f32(-0.5) * hs, f32(0.5) * ws, f32(0.5) * hs], axis=1))
        # mmdetection orders anchors ratio-major within a scale: [r0 s0, r0 s1, ..., r1 s0, ...]
        stacked = np.stack(anchors, axis=1)  # [ratios, sizes, 4]
        return stacked.reshape(-1, 4).astype(f32)

    @staticmethod
    def _cell_anchors(sizes, ratios):
        anchors = []
        for size in sizes:
            area = float(size) ** 2.0
            for r in ratios:
                w = math.sqrt(area / r)
                h = r * w
                anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return np.asarray(anchors, dtype="float32")

    @property
    def num_anchors(self):
        return len(self.cell_anchors[0])

    def forward(self, feats):
        """Anchors ``[H_l, W_l, A, 4]`` for each feature map ``[B, C, H_l, W_l]``."""
        out = []
        for feat, base, stride in zip(feats, self.cell_anchors, self.strides):
            if paddle.in_dynamic_mode():
                h, w = feat.shape[2], feat.shape[3]
            else:  # exported (static) programs see -1 for the spatial size
                h, w = paddle.shape(feat)[2], paddle.shape(feat)[3]
            shift_x = paddle.arange(w, dtype="float32") * stride + self.offset * stride
            shift_y = paddle.arange(h, dtype="float32") * stride + self.offset * stride
            sy, sx = paddle.meshgrid(shift_y, shift_x)
            shifts = paddle.stack([sx, sy, sx, sy], axis=-1)  # [H, W, 4]
            anchors = shifts[:, :, None, :] + _constant(base)[None, None, :, :]
            out.append(anchors)
        return out


def _constant(array):
    """A float32 tensor holding ``array``. In exported programs it is built from scalar fills: a constant
    list becomes an operator with a float-array attribute that Paddle Inference's oneDNN backend rejects."""
    if paddle.in_dynamic_mode():
        return paddle.to_tensor(array)
    flat = [paddle.full([1], float(v), dtype="float32") for v in np.asarray(array).reshape(-1)]
    return paddle.concat(flat).reshape(list(np.asarray(array).shape))
