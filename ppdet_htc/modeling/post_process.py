"""From cascade outputs to detections in original-image pixels: decode, NMS, rescale, paste masks."""
from typing import List

import paddle

from ..core import register
from . import box_utils, ops

__all__ = ["RCNNBox", "MultiClassNMS", "BBoxPostProcess", "MaskPostProcess"]


@register
class RCNNBox(object):
    """Decode class-agnostic deltas with ``prior_box_var`` and clip to the (float) input image size."""

    __shared__ = ["num_classes"]

    def __init__(self, prior_box_var: List[float] = (10.0, 10.0, 5.0, 5.0), code_type: str = "decode_center_size",
                 box_normalized: bool = False, num_classes: int = 80):
        self.prior_box_var = list(prior_box_var)
        self.num_classes = num_classes

    def __call__(self, deltas, rois, rois_num, im_shape):
        boxes = box_utils.delta2bbox(deltas, rois, self.prior_box_var)
        hw = paddle.gather(im_shape, box_utils.roi_image_index(rois_num))
        return box_utils.clip_boxes(boxes, hw)


@register
class MultiClassNMS(object):
    """Per-class NMS settings (``multiclass_nms3``): score > ``score_threshold``, IoU > ``nms_threshold``
    suppressed, at most ``keep_top_k`` detections per image over all classes."""

    def __init__(self, score_threshold: float = 0.05, nms_top_k: int = -1, keep_top_k: int = 100,
                 nms_threshold: float = 0.5, normalized: bool = True, nms_eta: float = 1.0,
                 return_index: bool = False, return_rois_num: bool = True, trt: bool = False):
        self.score_threshold = score_threshold
        self.nms_top_k = nms_top_k
        self.keep_top_k = keep_top_k
        self.nms_threshold = nms_threshold
        self.normalized = normalized
        self.nms_eta = nms_eta

    def __call__(self, bboxes, scores, rois_num, background_label=-1):
        return ops.multiclass_nms(
            bboxes, scores, rois_num, self.score_threshold, self.nms_threshold, self.keep_top_k,
            self.nms_top_k, self.normalized, self.nms_eta, background_label,
        )


@register
class BBoxPostProcess(object):
    """Scores and boxes of every RoI -> per-image detections ``[label, score, x1, y1, x2, y2]``."""

    __shared__ = ["num_classes"]
    __inject__ = ["decode", "nms"]

    def __init__(self, num_classes: int = 80, decode: object = None, nms: object = None):
        self.num_classes = num_classes
        self.decode = decode if decode is not None else RCNNBox(num_classes=num_classes)
        self.nms = nms if nms is not None else MultiClassNMS()

    def __call__(self, probs, deltas, rois, rois_num, im_shape):
        """probs ``[R,C+1]`` (last column background), deltas ``[R,4]``, rois ``[R,4]``.

        Returns ``(dets [K,6], dets_num [B] int32)`` in input-image pixels. Images without a
        detection have none (no placeholder row).
        """
        boxes = self.decode(deltas, rois, rois_num, im_shape)
        num = self.num_classes
        scores = probs[:, :num]
        bboxes = boxes[:, None, :].expand([boxes.shape[0], num, 4])
        dets, _, dets_num = self.nms(bboxes, scores, rois_num, background_label=num)
        return dets, dets_num

    @staticmethod
    def rescale(dets, dets_num, im_shape, scale_factor):
        """Map input-scale detections to the original image and drop those with no area left.

        ``origin_shape = floor(im_shape / scale_factor + 0.5)``; boxes are divided by the scale
        factors and clipped to it. Returns ``(dets_input, dets_orig, dets_num, origin_shape [B,2] int32)``
        where the kept rows are the same in both tensors.
        """
        origin = paddle.floor(im_shape / scale_factor + 0.5)
        if box_utils.known_empty(dets):
            return dets, dets, paddle.zeros_like(dets_num).astype("int32"), origin.astype("int32")
        img = box_utils.roi_image_index(dets_num)
        hw = paddle.gather(origin, img)
        sf = paddle.gather(scale_factor, img)
        scale = paddle.stack([sf[:, 1], sf[:, 0], sf[:, 1], sf[:, 0]], axis=1)
        boxes = box_utils.clip_boxes(dets[:, 2:] / scale, hw)
        keep = box_utils.nonempty_mask(boxes)
        dets_orig = paddle.concat([dets[:, :2], boxes], axis=1)
        idx = paddle.nonzero(keep).reshape([-1])
        new_num = paddle.scatter(paddle.zeros_like(dets_num), img, keep.astype(dets_num.dtype), overwrite=False)
        return (
            paddle.gather(dets, idx),
            paddle.gather(dets_orig, idx),
            new_num.astype("int32"),
            origin.astype("int32"),
        )


@register
class MaskPostProcess(object):
    """Paste ``[K,28,28]`` mask probabilities into each image's own original size, threshold them."""

    def __init__(self, binary_thresh: float = 0.5, export_onnx: bool = False, assign_on_cpu: bool = False):
        self.binary_thresh = binary_thresh

    def __call__(self, probs, dets_orig, dets_num, origin_shape):
        """Returns uint8 masks ``[K, H_max, W_max]``; rows of image i are valid in ``[:h_i, :w_i]``."""
        img = box_utils.roi_image_index(dets_num)
        hw = paddle.gather(origin_shape, img)
        if not paddle.in_dynamic_mode():  # exported program: the canvas size is a tensor
            canvas = origin_shape.max(axis=0)
            return ops.paste_masks(probs, dets_orig[:, 2:], hw, (canvas[0], canvas[1]), self.binary_thresh)
        canvas = origin_shape.max(axis=0).numpy() if origin_shape.shape[0] else [0, 0]
        return ops.paste_masks(probs, dets_orig[:, 2:], hw, (int(canvas[0]), int(canvas[1])), self.binary_thresh)
