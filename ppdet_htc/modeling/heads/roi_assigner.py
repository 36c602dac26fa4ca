"""Training targets of the R-CNN stages: RoI sampling (``BBoxAssigner``) and mask targets (``MaskAssigner``).

Both are batched over images and run on the device, without host round trips, except the optional
PaddleDetection-style polygon mask targets (``MaskAssigner.target='polygon'``), which pycocotools
rasterises on the host.
"""
from typing import List, Optional

import numpy as np
import paddle

from ...core import register
from .. import box_utils, ops
from ..sampling import match_boxes, sample_per_image
from .mask_targets import bitmap_mask_targets, polygon_mask_targets
from ...errors import ConfigError

__all__ = ["BBoxAssigner", "MaskAssigner", "SampledRoIs", "MaskTargetSource"]


class SampledRoIs(object):
    """RoIs sampled for one cascade stage, all images concatenated (image-major).

    rois ``[M,4]``, rois_num ``[B]`` int32, labels ``[M]`` int64 (0..C-1 fg, C background),
    gt_boxes ``[M,4]`` (best-matching ground truth; zeros in an image without any), gt_index ``[M]`` int64
    (index of that ground truth in its image), is_gt ``[M]`` bool (the RoI is a ground-truth box added
    as a proposal), image ``[M]`` int64 (image of each row).
    """

    def __init__(self, rois, rois_num, labels, gt_boxes, gt_index, is_gt, image=None):
        self.rois = rois
        self.rois_num = rois_num
        self.labels = labels
        self.gt_boxes = gt_boxes
        self.gt_index = gt_index
        self.is_gt = is_gt
        self.image = image if image is not None else box_utils.roi_image_index(rois_num)


@register
class BBoxAssigner(object):
    """Samples ``batch_size_per_im`` RoIs per image from ``[ground truth; proposals]``.

    A RoI is foreground when its best IoU with a ground truth of its image is ``>= fg_thresh`` (the
    stage's value of ``cascade_iou`` in a cascade) and background when it is below ``bg_thresh`` (the
    same value in a cascade). At most ``fg_fraction`` of the samples are foreground; the subsets are
    random (``use_random``) or the first candidates in ``[gt; proposals]`` order. Per image the output is
    ``[sampled foreground; sampled background]``; an image with no candidate gets no row.
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

    def __call__(self, rois, rois_num, gt, stage=None):
        """rois ``[R,4]`` image-major with per-image counts ``rois_num [B]``; gt: :class:`GroundTruth`.

        ``stage`` selects ``cascade_iou[stage]`` as both thresholds. Returns :class:`SampledRoIs`.
        """
        fg_t, bg_t = self.fg_thresh, self.bg_thresh
        if stage is not None:
            fg_t = bg_t = self.cascade_iou[stage]
        batch, width = gt.batch, gt.width
        gt_image = paddle.arange(batch, dtype="int64").unsqueeze(1).expand([batch, width]).reshape([-1])
        gt_slot = paddle.arange(width, dtype="int64").unsqueeze(0).expand([batch, width]).reshape([-1])
        roi_image = box_utils.roi_image_index(rois_num)
        roi_rank = paddle.arange(rois.shape[0], dtype="int64") - paddle.gather(
            paddle.cumsum(rois_num.astype("int64")) - rois_num.astype("int64"), roi_image)
        cand = paddle.concat([gt.boxes.reshape([-1, 4]), rois.astype("float32")])
        image = paddle.concat([gt_image, roi_image])
        is_gt = paddle.concat([paddle.ones([batch * width], dtype="bool"), paddle.zeros([rois.shape[0]], dtype="bool")])
        real = paddle.concat([gt.valid.reshape([-1]), paddle.ones([rois.shape[0]], dtype="bool")])
        position = paddle.concat([gt_slot, width + roi_rank])  # [gt; proposals] order within an image
        max_iou, match = match_boxes(cand, image, gt)
        has_gt = paddle.gather(gt.num, image) > 0
        is_fg = real & has_gt & (max_iou >= fg_t)
        is_bg = real & ((max_iou < bg_t) | paddle.logical_not(has_gt))
        keep = sample_per_image(is_fg, is_bg, image, batch, self.batch_size_per_im, self.fg_fraction,
                                self.use_random, priority=position)
        image_k = paddle.gather(image, keep)
        match_k = paddle.gather(match, keep)
        fg_k = box_utils.gather_mask(is_fg, keep)
        rois_k = paddle.gather(cand, keep)
        flat_match = image_k * width + match_k
        cls = paddle.gather(gt.classes.reshape([-1]), flat_match)
        labels = paddle.where(fg_k, cls, paddle.full_like(cls, self.num_classes))
        gt_boxes = paddle.gather(gt.boxes.reshape([-1, 4]), flat_match)
        res = SampledRoIs(rois_k, box_utils.count_per_image(image_k, batch), labels, gt_boxes, match_k,
                          box_utils.gather_mask(is_gt, keep), image_k)
        for t in (res.rois, res.labels, res.gt_boxes):
            t.stop_gradient = True
        return res


class MaskTargetSource(object):
    """Where mask targets come from: the batch's full-image bitmaps (``bitmaps``: per image uint8
    ``[G_i, H, W]`` at the padded input size, made by the train reader) and/or the polygons
    (``polygons``: per image, per object, for PaddleDetection's host-side rasterisation)."""

    def __init__(self, gt, bitmaps=None, polygons=None):
        self.gt = gt
        self.bitmaps = bitmaps
        self.polygons = polygons
        self._stacked = None

    @classmethod
    def from_inputs(cls, inputs, gt):
        return cls(gt, inputs.get("gt_segm"), inputs.get("gt_poly"))

    def stacked_bitmaps(self):
        """All objects' bitmaps ``[N_gt, 1, H, W]`` float32 (built once per batch, shared by the stages)."""
        if self._stacked is None:
            if self.bitmaps is None:
                raise ConfigError(
                    "MaskAssigner(target='bitmap') needs the batch's full-image masks 'gt_segm', which the "
                    "train reader adds to every training batch; got a batch without them (pass gt_segm, or "
                    "use MaskAssigner.target: polygon)")
            parts = [b for b in self.bitmaps if b is not None and b.shape[0] > 0]
            if not parts:
                return None
            self._stacked = paddle.concat(parts).astype("float32").unsqueeze(1)
        return self._stacked


@register
class MaskAssigner(object):
    """Mask targets for the foreground RoIs of a stage: the matched object's mask in the RoI's
    ``mask_resolution`` grid, binarised.

    ``target='bitmap'`` (default, mmdetection's method, on the device): RoIAlign (aligned, adaptive
    sampling) of the object's full-image bitmap over the RoI, ``>= 0.5``.
    ``target='polygon'`` (PaddleDetection's reference): the polygons moved into the RoI grid and
    rasterised by pycocotools on the host (RLE-annotated objects are resampled bilinearly).
    """

    __shared__ = ["num_classes", "mask_resolution"]

    def __init__(self, num_classes: int = 80, mask_resolution: Optional[int] = None, target: str = "bitmap"):
        if target not in ("bitmap", "polygon"):
            raise ConfigError("MaskAssigner.target must be 'bitmap' or 'polygon', got {!r}".format(target))
        self.num_classes = num_classes
        self.mask_resolution = mask_resolution
        self.target = target

    def __call__(self, sampled, source):
        """sampled: :class:`SampledRoIs`; source: :class:`MaskTargetSource`.

        Returns ``(rois [N,4], rois_num [B], labels [N] int64, masks [N,M,M] float32)`` for the fg RoIs.
        """
        labels = sampled.labels
        fg = paddle.logical_and(labels >= 0, labels < self.num_classes)
        index = paddle.nonzero(fg).reshape([-1])
        rois = paddle.gather(sampled.rois, index)
        batch = sampled.rois_num.shape[0]
        image = paddle.gather(sampled.image, index)
        nums = box_utils.count_per_image(image, batch)
        gt_index = paddle.gather(sampled.gt_index, index)
        if self.target == "polygon":
            masks = self._polygon_targets(sampled, fg, source.polygons)
        else:
            masks = self._bitmap_targets(rois, image, gt_index, source)
        return rois, nums, paddle.gather(labels, index), masks

    def _bitmap_targets(self, rois, image, gt_index, source):
        res = int(self.mask_resolution)
        n = rois.shape[0]
        if n == 0:
            return paddle.zeros([0, res, res], dtype="float32")
        stacked = source.stacked_bitmaps()
        object_id = paddle.gather(source.gt.offsets(), image) + gt_index  # row of the object's bitmap
        order = paddle.argsort(object_id * n + paddle.arange(n, dtype="int64"))
        per_object = box_utils.count_per_image(paddle.gather(object_id, order), stacked.shape[0])
        sampled = ops.roi_align(stacked, paddle.gather(rois, order), per_object, res, 1.0, 0, True)
        targets = (sampled[:, 0] >= 0.5).astype("float32")
        return paddle.gather(targets, paddle.argsort(order))

    def _polygon_targets(self, sampled, fg, gt_segms):
        """PaddleDetection's targets (host, pycocotools), one batched call per image and annotation kind."""
        res = int(self.mask_resolution)
        counts = sampled.rois_num.numpy().astype(np.int64)
        fg_np = fg.numpy()
        image_of = np.repeat(np.arange(len(counts)), counts)[fg_np]
        gt_of = sampled.gt_index.numpy()[fg_np]
        boxes = sampled.rois.numpy()[fg_np]
        masks = np.zeros((len(boxes), res, res), np.float32)
        for img in np.unique(image_of):
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
        return paddle.to_tensor(masks)
