"""RoI feature extraction: multi-level FPN RoIAlign (level chosen by box size) or a single map."""
from typing import List, Union

import paddle

from ...core import register
from .. import ops
from ..box_utils import known_empty

__all__ = ["RoIAlign"]


@register
class RoIAlign(object):
    """RoIAlign over FPN levels ``start_level..end_level`` (P2..P5 by default).

    Each RoI goes to level ``floor(log2(sqrt(area)/canonical_size + eps) + canconical_level)``
    clamped to the range (``canconical_level`` keeps PaddleDetection's spelling). With a single
    feature map, that map is used with ``spatial_scale[0]``.
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
    ):
        self.resolution = resolution
        self.spatial_scale = list(spatial_scale) if isinstance(spatial_scale, (list, tuple)) else [spatial_scale]
        self.sampling_ratio = sampling_ratio
        self.canconical_level = canconical_level
        self.canonical_size = canonical_size
        self.start_level = start_level
        self.end_level = end_level
        self.aligned = aligned

    def __call__(self, feats, rois, rois_num, spatial_scale=None):
        """feats: list of ``[B,C,H,W]``; rois ``[R,4]`` image-major; rois_num ``[B]``. Returns ``[R,C,P,P]``.

        ``spatial_scale`` overrides the configured scale of a single map (the semantic feature).
        """
        if len(feats) == 1:
            scale = self.spatial_scale[0] if spatial_scale is None else spatial_scale
            return ops.roi_align(feats[0], rois, rois_num, self.resolution, scale, self.sampling_ratio, self.aligned)
        if known_empty(rois):
            c = feats[self.start_level].shape[1]
            return paddle.zeros([0, c, self.resolution, self.resolution], dtype=feats[0].dtype)
        offset = 2
        rois_dist, restore_index, nums = ops.distribute_fpn_proposals(
            rois, rois_num, self.start_level + offset, self.end_level + offset,
            self.canconical_level, self.canonical_size,
        )
        outs = []
        for i, lvl in enumerate(range(self.start_level, self.end_level + 1)):
            outs.append(
                ops.roi_align(
                    feats[lvl], rois_dist[i], nums[i], self.resolution, self.spatial_scale[lvl],
                    self.sampling_ratio, self.aligned,
                )
            )
        outs = [o for o in outs if not known_empty(o)]  # Paddle 2.x cannot concat empty tensors
        return paddle.gather(paddle.concat(outs), restore_index.reshape([-1]))
