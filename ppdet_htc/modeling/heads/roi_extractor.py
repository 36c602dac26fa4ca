"""RoI feature extraction: which FPN level a RoI reads from, RoIAlign on it, and the semantic feature.

* Level mappers (one job: RoI -> FPN level), injectable so both conventions are one config key apart:
  :class:`CanonicalLevelMapper` (PaddleDetection, the FPN paper's rule through Paddle's fused
  ``distribute_fpn_proposals`` kernel) and :class:`FinestScaleLevelMapper` (mmdetection's
  ``SingleRoIExtractor`` rule).
* :class:`RoIAlign` (PaddleDetection's YAML name): RoIAlign over the FPN levels with a level mapper, or on
  a single map.
* :class:`RoIFeatureExtractor`: the one extractor the HTC heads use: FPN RoIAlign plus, when HTC fuses the
  semantic feature, the semantic map's RoIAlign pooled to the same size and added.
"""
from typing import List, Optional, Union

import paddle
import paddle.nn.functional as F

from ...core import register, serializable
from .. import ops
from ..box_utils import known_empty, roi_image_index
from ..shape_spec import ShapeSpec
from ...errors import ConfigError

__all__ = ["CanonicalLevelMapper", "FinestScaleLevelMapper", "RoIAlign", "RoIFeatureExtractor"]


@serializable
class CanonicalLevelMapper(object):
    """Level ``floor(log2(sqrt(area) / canonical_size + eps) + canonical_level)`` (FPN paper, PaddleDetection).

    Runs Paddle's fused ``distribute_fpn_proposals`` kernel, whose ``eps`` is 1e-6 on CPU and 1e-8 on GPU,
    as in the reference. Levels are absolute FPN levels (2 = P2).
    """

    def __init__(self, canonical_size: int = 224, canonical_level: int = 4):
        self.canonical_size = canonical_size
        self.canonical_level = canonical_level

    def distribute(self, rois, rois_num, min_level, max_level):
        """Split ``rois [R,4]`` (image-major, ``rois_num [B]``) over levels ``min_level..max_level``.

        Returns ``(rois_per_level, restore_index [R] int, nums_per_level)``: lists over levels of ``[R_l,4]``
        and ``[B]`` int32, and the index that puts ``concat(level results)`` back into input order.
        """
        multi, restore, nums = ops.distribute_fpn_proposals(
            rois, rois_num, min_level, max_level, self.canonical_level, self.canonical_size)
        return multi, restore.reshape([-1]), nums


@serializable
class FinestScaleLevelMapper(object):
    """mmdetection's rule: ``floor(log2(sqrt(w * h) / finest_scale + 1e-6))`` clamped to the levels
    (level 0 = the first pooled map, P2); ``finest_scale`` 56 (SEMANTICS_MMDET §6.1, Quirk M5)."""

    # In an exported program a level without RoIs gives empty tensors, which Paddle 3's executor runs but
    # Paddle 2.x's static executor rejects ("Tensor holds no memory"): exporting needs Paddle >= 3.
    exports_on_paddle2 = False

    def __init__(self, finest_scale: float = 56.0, eps: float = 1e-6):
        self.finest_scale = float(finest_scale)
        self.eps = float(eps)

    def levels(self, rois, num_levels):
        """``[R]`` int64 level index in ``0..num_levels-1`` (float32 arithmetic as mmdetection)."""
        scale = paddle.sqrt((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1]))
        lvl = paddle.floor(paddle.log2(scale / self.finest_scale + self.eps))
        return paddle.clip(lvl, 0, num_levels - 1).astype("int64")

    def distribute(self, rois, rois_num, min_level, max_level):
        """Same contract as :meth:`CanonicalLevelMapper.distribute`, with tensor ops (no host round trip)."""
        num_levels = max_level - min_level + 1
        lvl = self.levels(rois, num_levels)
        image = roi_image_index(rois_num)
        batch = rois_num.shape[0] if paddle.in_dynamic_mode() else paddle.shape(rois_num)[0]
        per_image = F.one_hot(image, batch).astype("int32")  # [R, B]
        multi, nums, order = [], [], []
        for level in range(num_levels):
            hit = lvl == level
            sel = paddle.nonzero(hit).reshape([-1])  # ascending: stays image-major
            multi.append(paddle.gather(rois, sel))
            nums.append((per_image * hit.astype("int32").unsqueeze(1)).sum(axis=0).astype("int32"))
            order.append(sel)
        restore = paddle.argsort(paddle.concat(order))
        return multi, restore, nums


def _build_mapper(spec, canonical_size, canonical_level):
    if spec is None:
        return CanonicalLevelMapper(canonical_size, canonical_level)
    from ...core.config import build_component

    return build_component(spec, where="RoIAlign.level_mapper")


@register
class RoIAlign(object):
    """RoIAlign over FPN levels ``start_level..end_level`` (P2..P5 by default) or on a single map.

    Each RoI reads the level its ``level_mapper`` picks (default: PaddleDetection's rule with
    ``canonical_size``/``canconical_level``, the latter keeping PaddleDetection's spelling).
    ``aligned=True`` shifts by half a pixel; ``sampling_ratio <= 0`` samples ``ceil(roi / P)`` points per bin.
    """

    def __init__(
        self,
        resolution: int = 14,
        spatial_scale: Union[float, List[float]] = 0.0625,
        sampling_ratio: int = 0,
        canconical_level: int = 4,
        canonical_size: int = 224,
        start_level: int = 0,
        end_level: int = 3,
        aligned: bool = False,
        level_mapper: object = None,
    ):
        self.resolution = int(resolution)
        self.spatial_scale = list(spatial_scale) if isinstance(spatial_scale, (list, tuple)) else [spatial_scale]
        self.sampling_ratio = sampling_ratio
        self.canconical_level = canconical_level
        self.canonical_size = canonical_size
        self.start_level = start_level
        self.end_level = end_level
        self.aligned = aligned
        self.level_mapper = _build_mapper(level_mapper, canonical_size, canconical_level)

    def __call__(self, feats, rois, rois_num, spatial_scale=None):
        """feats: list of ``[B,C,H,W]``; rois ``[R,4]`` image-major; rois_num ``[B]``. Returns ``[R,C,P,P]``.

        ``spatial_scale`` overrides the configured scale of a single map.
        """
        if len(feats) == 1:
            scale = self.spatial_scale[0] if spatial_scale is None else spatial_scale
            return ops.roi_align(feats[0], rois, rois_num, self.resolution, scale, self.sampling_ratio, self.aligned)
        if known_empty(rois):
            c = feats[self.start_level].shape[1]
            return paddle.zeros([0, c, self.resolution, self.resolution], dtype=feats[0].dtype)
        offset = 2  # level index 0 is P2
        rois_dist, restore_index, nums = self.level_mapper.distribute(
            rois, rois_num, self.start_level + offset, self.end_level + offset)
        outs = []
        for i, lvl in enumerate(range(self.start_level, self.end_level + 1)):
            outs.append(ops.roi_align(feats[lvl], rois_dist[i], nums[i], self.resolution, self.spatial_scale[lvl],
                                      self.sampling_ratio, self.aligned))
        outs = [o for o in outs if not known_empty(o)]  # Paddle 2.x cannot concat empty tensors
        return paddle.gather(paddle.concat(outs), restore_index)


def _average_pool_to(x, size):
    """``adaptive_avg_pool2d(x, size)``; for an exact integer factor (14 -> 7) the same bins through the
    faster fixed-window ``avg_pool2d``."""
    h, w = x.shape[2], x.shape[3]
    if h % size[0] == 0 and w % size[1] == 0:
        k = [h // size[0], w // size[1]]
        return F.avg_pool2d(x, kernel_size=k, stride=k)
    return F.adaptive_avg_pool2d(x, size)


class RoIFeatureExtractor(object):
    """FPN RoI features, plus the fused semantic feature when the model has a semantic head.

    ``fpn``: a :class:`RoIAlign` over the FPN levels (its resolution is the output size);
    ``semantic``: a single-map :class:`RoIAlign` for the semantic feature (HTC pools it at 14x14 and
    average-pools it to the FPN resolution, e.g. 7x7 for the box branch), or None.
    """

    def __init__(self, fpn: RoIAlign, semantic: Optional[RoIAlign] = None, channels: Optional[int] = None):
        self.fpn = fpn
        self.semantic = semantic
        self.channels = channels

    @property
    def resolution(self):
        return self.fpn.resolution

    @property
    def out_shape(self):
        return ShapeSpec(channels=self.channels, height=self.resolution, width=self.resolution)

    def __call__(self, feats, rois, rois_num, semantic_feat=None):
        """``[R,C,P,P]`` features of ``rois [R,4]`` (image-major, ``rois_num [B]``)."""
        x = self.fpn(feats, rois, rois_num)
        if semantic_feat is not None and self.semantic is None:
            raise ConfigError("RoIFeatureExtractor: got a semantic feature but was built without a semantic "
                             "RoIAlign (pass the semantic map's stride when building the head)")
        if semantic_feat is not None:
            s = self.semantic([semantic_feat], rois, rois_num)
            if s.shape[2:] != x.shape[2:]:
                s = _average_pool_to(s, x.shape[2:])
            x = x + s
        return x


def build_roi_feature_extractor(fpn_spec, semantic_spec, strides, semantic_stride, channels, num_levels=4):
    """The extractor of one branch from PaddleDetection-style nested dicts (``roi_extractor`` /
    ``semantic_roi_extractor``) and the shapes of the maps it reads: FPN ``strides`` (the first
    ``num_levels`` are pooled) and the semantic map's ``semantic_stride`` (None: no semantic fusion)."""
    fpn = dict(fpn_spec or {})
    fpn["spatial_scale"] = [1.0 / s for s in strides]
    fpn.setdefault("end_level", num_levels - 1)
    semantic = None
    if semantic_stride is not None:
        sem = dict(semantic_spec or {})
        sem["spatial_scale"] = [1.0 / semantic_stride]
        sem["start_level"] = 0
        sem["end_level"] = 0
        sem.pop("level_mapper", None)
        semantic = RoIAlign(**sem)
    return RoIFeatureExtractor(RoIAlign(**fpn), semantic, channels)
