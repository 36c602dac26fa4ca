"""Training targets of the R-CNN stages: RoI sampling (``BBoxAssigner``) and mask targets (``MaskAssigner``)."""
from typing import List, Optional

import numpy as np
import paddle

from ...core import register
from ..proposal.target_assign import label_anchors, sample_labels
from .mask_targets import bitmap_mask_targets, polygon_mask_targets

__all__ = ["BBoxAssigner", "MaskAssigner", "SampledRoIs"]


class SampledRoIs(object):
    """RoIs sampled for one cascade stage, all images concatenated (image-major).

    rois ``[M,4]``, rois_num ``[B]`` int32, labels ``[M]`` int64 (0..C-1 fg, C background),
    gt_boxes ``[M,4]`` (matched ground truth), gt_index ``[M]`` int64 (index of that ground truth in
    its image), is_gt ``[M]`` bool (the RoI is a ground-truth box added as a proposal).
    """

    def __init__(self, rois, rois_num, labels, gt_boxes, gt_index, is_gt):
        self.rois = rois
        self.rois_num = rois_num
        self.labels = labels
        self.gt_boxes = gt_boxes
        self.gt_index = gt_index
        self.is_gt = is_gt


@register
class BBoxAssigner(object):
    """Samples ``batch_size_per_im`` RoIs per image from ``[ground truth; proposals]``.

    A RoI is foreground when its best IoU with a ground truth is ``>= fg_thresh`` (the stage's value
    of ``cascade_iou`` in a cascade) and background when it is below ``bg_thresh`` (the same value in a
    cascade). At most ``fg_fraction`` of the samples are foreground; the subsets are random.
    """

    __shared__ = ["num_classes"]

    def __init__(
        self,
        batch_size_per_im: int = 512,
        fg_fraction: float = 0.25,
        fg_thresh: float = 0.5,
        bg_thresh: float = 0.5,
        ignore_thresh: float = -1.0,
        use_random: bool = True,
        cascade_iou: List[float] = (0.5, 0.6, 0.7),
        num_classes: int = 80,
        assign_on_cpu: bool = False,
    ):
        self.batch_size_per_im = batch_size_per_im
        self.fg_fraction = fg_fraction
        self.fg_thresh = fg_thresh
        self.bg_thresh = bg_thresh
        self.ignore_thresh = ignore_thresh
        self.use_random = use_random
        self.cascade_iou = list(cascade_iou)
        self.num_classes = num_classes

    def __call__(self, rois, rois_num, gt_boxes, gt_classes, stage=None):
        """rois ``[R,4]`` with per-image counts ``rois_num``; gt_boxes/gt_classes: per-image lists.

        ``stage`` selects ``cascade_iou[stage]`` as both thresholds. Returns :class:`SampledRoIs`.
        """
        from .. import box_utils

        fg_t, bg_t = self.fg_thresh, self.bg_thresh
        if stage is not None:
            fg_t = bg_t = self.cascade_iou[stage]
        counts = [int(n) for n in rois_num.numpy()]
        per_image = paddle.split(rois, counts) if len(counts) > 1 else [rois]
        out = {"rois": [], "labels": [], "gt_boxes": [], "gt_index": [], "is_gt": [], "num": []}
        for img_rois, gt, gt_cls in zip(per_image, gt_boxes, gt_classes):
            gt = gt.reshape([-1, 4]).astype("float32")
            gt_cls = gt_cls.reshape([-1]).astype("int64")
            n_gt = gt.shape[0]
            cand = paddle.concat([gt, img_rois]) if n_gt > 0 else img_rois
            if n_gt > 0:
                iou = box_utils.bbox_overlaps(gt, cand)
                matches, match_labels = label_anchors(iou, fg_t, bg_t, allow_low_quality=False)
                cls = paddle.gather(gt_cls, matches)
                cls = paddle.where(match_labels == 0, paddle.full_like(cls, self.num_classes), cls)
                cls = paddle.where(match_labels == -1, paddle.full_like(cls, -1), cls)
            else:
                matches = paddle.zeros([cand.shape[0]], dtype="int64")
                cls = paddle.full([cand.shape[0]], self.num_classes, dtype="int64")
            fg, bg = sample_labels(cls, self.batch_size_per_im, self.fg_fraction, self.num_classes, self.use_random)
            keep = paddle.concat([fg, bg])
            if keep.shape[0] == 0:
                keep = paddle.zeros([1], dtype="int64")
            out["rois"].append(paddle.gather(cand, keep))
            out["labels"].append(paddle.gather(cls, keep))
            m = paddle.gather(matches, keep)
            out["gt_index"].append(m)
            out["gt_boxes"].append(paddle.gather(gt, m) if n_gt > 0 else paddle.zeros([keep.shape[0], 4]))
            out["is_gt"].append(keep < n_gt)
            out["num"].append(keep.shape[0])
        res = SampledRoIs(
            paddle.concat(out["rois"]),
            paddle.to_tensor(np.asarray(out["num"], dtype="int32")),
            paddle.concat(out["labels"]),
            paddle.concat(out["gt_boxes"]),
            paddle.concat(out["gt_index"]),
            paddle.concat(out["is_gt"]),
        )
        for t in (res.rois, res.labels, res.gt_boxes):
            t.stop_gradient = True
        return res


@register
class MaskAssigner(object):
    """Mask targets for the foreground RoIs of a stage: the matched object's mask in the RoI's
    ``mask_resolution`` grid (polygons rasterised with pycocotools, or a resampled bitmap)."""

    __shared__ = ["num_classes", "mask_resolution"]

    def __init__(self, num_classes: int = 80, mask_resolution: Optional[int] = None):
        self.num_classes = num_classes
        self.mask_resolution = mask_resolution

    def __call__(self, sampled, gt_segms):
        """sampled: :class:`SampledRoIs`; gt_segms: per image, per object polygons or an HxW bitmap.

        Returns ``(rois [N,4], rois_num [B], labels [N] int64, masks [N,M,M] float32)`` for fg RoIs.
        """
        labels = sampled.labels
        fg = paddle.logical_and(labels >= 0, labels < self.num_classes)
        counts = sampled.rois_num.numpy().astype(np.int64)
        fg_np = fg.numpy()
        image_of = np.repeat(np.arange(len(counts)), counts)[fg_np]
        gt_of = sampled.gt_index.numpy()[fg_np]
        boxes = sampled.rois.numpy()[fg_np]
        res = self.mask_resolution
        masks = np.zeros((len(boxes), res, res), np.float32)
        for img in np.unique(image_of):  # one batched call per image and annotation kind
            segms = gt_segms[img]
            sel = np.nonzero(image_of == img)[0]
            is_bitmap = np.array([isinstance(sg, np.ndarray) for sg in segms], dtype=bool)[gt_of[sel]]
            poly_rois = sel[~is_bitmap]
            if len(poly_rois):
                masks[poly_rois] = polygon_mask_targets(segms, gt_of[poly_rois], boxes[poly_rois], res)
            bitmap_rois = sel[is_bitmap]
            if len(bitmap_rois):
                objs, local = np.unique(gt_of[bitmap_rois], return_inverse=True)
                stack = np.stack([segms[g] for g in objs])
                masks[bitmap_rois] = bitmap_mask_targets(stack, local, boxes[bitmap_rois], res)
        nums = np.bincount(image_of, minlength=len(counts)).astype(np.int32)
        index = paddle.nonzero(fg).reshape([-1])
        mask_t = paddle.to_tensor(masks)
        return (
            paddle.gather(sampled.rois, index),
            paddle.to_tensor(nums),
            paddle.gather(labels, index),
            mask_t,
        )
