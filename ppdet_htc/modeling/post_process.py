"""From cascade outputs to detections in original-image pixels: decode, NMS, rescale, paste masks.

The pieces are injectable, so PaddleDetection's and mmdetection's post-processing are two configs of
the same classes:

================================  ==========================================  ==========================================
step                              PaddleDetection (default)                   mmdetection 2.x
================================  ==========================================  ==========================================
decode (``BBoxPostProcess.decode``)  ``RCNNBox`` (weights 30, 30, 15, 15)     ``DeltaXYWHBBoxCoder`` (stds .033/.067)
NMS (``BBoxPostProcess.nms``)       ``MultiClassNMS`` (``multiclass_nms3``)   ``BatchedNMS`` (offset trick, score order)
rescale (``rescale_before_nms``)    after NMS, clip to the image, drop empty  before NMS (``B / sf``), no clip/drop;
                                                                               mask RoIs ``(B / sf) * sf``
================================  ==========================================  ==========================================
"""
from typing import List

import numpy as np
import paddle

from ..core import register, serializable
from . import box_utils, ops
from .box_coder import DeltaBBoxCoder

__all__ = ["RCNNBox", "MultiClassNMS", "BatchedNMS", "BBoxPostProcess", "MaskPostProcess"]


@serializable
class RCNNBox(DeltaBBoxCoder):
    """PaddleDetection's name for the final box decoder: class-agnostic deltas divided by
    ``prior_box_var``, clipped to the (float) input image size."""

    __shared__ = ["num_classes"]

    def __init__(self, prior_box_var: List[float] = (10.0, 10.0, 5.0, 5.0), code_type: str = "decode_center_size",
                 box_normalized: bool = False, num_classes: int = 80):
        super().__init__(prior_box_var)
        self.prior_box_var = list(prior_box_var)
        self.num_classes = num_classes

    def __call__(self, deltas, rois, rois_num, im_shape):
        return self.decode_and_clip(deltas, rois, rois_num, im_shape)


@serializable
class MultiClassNMS(object):
    """Per-class NMS settings (``multiclass_nms3``): score > ``score_threshold``, IoU > ``nms_threshold``
    suppressed, at most ``keep_top_k`` detections per image over all classes. Output rows of an image are
    ordered by class, then RoI (PaddleDetection's order)."""

    def __init__(self, score_threshold: float = 0.05, nms_top_k: int = -1, keep_top_k: int = 100,
                 nms_threshold: float = 0.5, normalized: bool = True, nms_eta: float = 1.0,
                 return_index: bool = False, return_rois_num: bool = True, trt: bool = False):
        self.score_threshold = score_threshold
        self.nms_top_k = nms_top_k
        self.keep_top_k = keep_top_k
        self.nms_threshold = nms_threshold
        self.normalized = normalized
        self.nms_eta = nms_eta

    def __call__(self, boxes, scores, rois_num):
        """boxes ``[R,4]`` (class-agnostic), scores ``[R,C]`` (no background column), rois_num ``[B]``.
        Returns ``(dets [K,6] = [label, score, x1, y1, x2, y2], dets_num [B] int32)``."""
        num = scores.shape[1]
        bboxes = boxes[:, None, :].expand([boxes.shape[0], num, 4])
        dets, _, dets_num = ops.multiclass_nms(
            bboxes, scores, rois_num, self.score_threshold, self.nms_threshold, self.keep_top_k,
            self.nms_top_k, self.normalized, self.nms_eta, num,
        )
        return dets, dets_num


@serializable
class BatchedNMS(object):
    """mmdetection's ``multiclass_nms`` for class-agnostic boxes: every ``(RoI, class)`` with score
    ``> score_threshold`` is a candidate (RoI-major), class-wise NMS by mmcv's coordinate-offset trick
    (``ops.batched_nms``), then the best ``keep_top_k`` per image in descending score order."""

    # __call__ can append the exported programs' placeholder row itself (see there).
    makes_placeholder = True

    def __init__(self, score_threshold: float = 0.001, nms_threshold: float = 0.5, keep_top_k: int = 100):
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.keep_top_k = int(keep_top_k)

    def __call__(self, boxes, scores, rois_num, placeholder=False):
        """Same contract as :meth:`MultiClassNMS.__call__` (rows of an image by descending score).

        ``placeholder`` (exported programs): the output ends with the row ``[0, -1, 0, 0, 1, 1]``, counted in
        the last image. It enters as one more candidate (a RoI of its own that passes the threshold in class
        0, scored -1, in a group and a pseudo-image of its own: it neither suppresses nor is suppressed, and
        never takes a real detection's place), so that no intermediate tensor is ever empty: Paddle
        Inference's oneDNN kernels reject empty tensors, e.g. when no score passes the threshold.
        """
        num_classes = scores.shape[1]
        batch = rois_num.shape[0]
        flat = scores.reshape([-1])
        image_of_roi = box_utils.roi_image_index(rois_num)
        passing = flat
        if placeholder:
            above = paddle.full([1], self.score_threshold + 1.0, dtype=flat.dtype)
            below = paddle.full([num_classes], self.score_threshold - 1.0, dtype=flat.dtype)
            passing = paddle.concat([flat, paddle.concat([above, below])[:num_classes]])
            flat = paddle.concat([flat, paddle.full([num_classes], -1.0, dtype=flat.dtype)])
            boxes = paddle.concat([boxes, _placeholder_row(boxes.dtype)[:, 2:]])
            image_of_roi = paddle.concat([image_of_roi, paddle.full([1], 1, "int64") * batch])
        cand = paddle.nonzero(passing > self.score_threshold).reshape([-1])
        if box_utils.known_empty(cand):
            return paddle.zeros([0, 6], dtype=boxes.dtype), paddle.zeros([batch], dtype="int32")
        roi = cand // num_classes
        label = cand - roi * num_classes
        image = paddle.gather(image_of_roi, roi)
        cand_boxes = paddle.gather(boxes, roi)
        cand_scores = paddle.gather(flat, cand)
        keep = ops.batched_nms(cand_boxes, cand_scores, image * num_classes + label, self.nms_threshold)
        keep_image = paddle.gather(image, keep)
        # The placeholder's pseudo-image ``batch`` sorts after every real image and has its own top k.
        keep = box_utils.top_k_per_image(keep, keep_image, batch + 1 if placeholder else batch, self.keep_top_k)
        keep_image = paddle.gather(image, keep)
        if placeholder:
            keep_image = paddle.minimum(keep_image, paddle.full([1], 1, "int64") * (batch - 1))
        dets = paddle.concat([paddle.gather(label, keep).astype(boxes.dtype).unsqueeze(1),
                              paddle.gather(cand_scores, keep).unsqueeze(1), paddle.gather(cand_boxes, keep)], axis=1)
        return dets, box_utils.count_per_image(keep_image, batch)


@register
class BBoxPostProcess(object):
    """Scores and deltas of every RoI -> per-image detections ``[label, score, x1, y1, x2, y2]``.

    ``decode`` turns the last stage's deltas into boxes clipped to the input image; ``nms`` selects the
    detections; ``rescale_before_nms`` says where boxes are mapped back to the original image (see the
    module docstring).
    """

    __shared__ = ["num_classes"]
    __inject__ = ["decode", "nms"]

    def __init__(self, num_classes: int = 80, decode: object = None, nms: object = None,
                 rescale_before_nms: bool = False):
        self.num_classes = num_classes
        self.decode = decode if decode is not None else RCNNBox(num_classes=num_classes)
        self.nms = nms if nms is not None else MultiClassNMS()
        self.rescale_before_nms = bool(rescale_before_nms)

    def __call__(self, probs, deltas, rois, rois_num, im_shape, scale_factor, placeholder=False):
        """probs ``[R,C+1]`` (last column background), deltas ``[R,4]``, rois ``[R,4]``, im_shape and
        scale_factor ``[B,2]`` (y, x). ``placeholder``: append one detection with score -1 (exported
        programs, which must never produce empty tensors).

        Returns ``(dets_input [K,6], dets_orig [K,6], dets_num [B] int32, origin_shape [B,2] int32)``: the
        same detections with boxes in input pixels (the mask branch's RoIs) and in original pixels.
        """
        boxes = self.decode(deltas, rois, rois_num, im_shape)
        origin = paddle.floor(im_shape / scale_factor + 0.5)
        if self.rescale_before_nms:
            boxes = boxes / _box_scale(scale_factor, box_utils.roi_image_index(rois_num))
        if placeholder and getattr(self.nms, "makes_placeholder", False):
            dets, dets_num = self.nms(boxes, probs[:, :self.num_classes], rois_num, placeholder=True)
        else:
            dets, dets_num = self.nms(boxes, probs[:, :self.num_classes], rois_num)
            if placeholder:
                dets, dets_num = _add_placeholder(dets, dets_num)
        if self.rescale_before_nms:
            return self._scale_to_input(dets, dets_num, scale_factor, origin)
        return self._rescale_and_clip(dets, dets_num, scale_factor, origin)

    def paste_boxes(self, dets_input, dets_orig, dets_num, scale_factor):
        """Boxes (original pixels) the masks are pasted at: the output boxes (PaddleDetection), or
        mmdetection 2.x's round trip ``(B' * sf) / sf`` of the mask RoIs (within 1 ulp of the output box)."""
        if not self.rescale_before_nms or box_utils.known_empty(dets_input):
            return dets_orig[:, 2:]
        return dets_input[:, 2:] / _box_scale(scale_factor, box_utils.roi_image_index(dets_num))

    @staticmethod
    def _scale_to_input(dets, dets_num, scale_factor, origin):
        """mmdetection: detections stay as they are (original scale, not clipped); mask RoIs are ``B' * sf``."""
        if box_utils.known_empty(dets):
            return dets, dets, dets_num.astype("int32"), origin.astype("int32")
        scale = _box_scale(scale_factor, box_utils.roi_image_index(dets_num))
        dets_in = paddle.concat([dets[:, :2], dets[:, 2:] * scale], axis=1)
        return dets_in, dets, dets_num.astype("int32"), origin.astype("int32")

    @staticmethod
    def _rescale_and_clip(dets, dets_num, scale_factor, origin):
        """PaddleDetection: divide by the scale factors, clip to ``origin_shape = floor(im_shape / sf + 0.5)``,
        drop detections with no area left (the same rows in both outputs)."""
        if box_utils.known_empty(dets):
            return dets, dets, paddle.zeros_like(dets_num).astype("int32"), origin.astype("int32")
        img = box_utils.roi_image_index(dets_num)
        boxes = box_utils.clip_boxes(dets[:, 2:] / _box_scale(scale_factor, img), paddle.gather(origin, img))
        keep = box_utils.nonempty_mask(boxes)
        dets_orig = paddle.concat([dets[:, :2], boxes], axis=1)
        idx = paddle.nonzero(keep).reshape([-1])
        new_num = paddle.scatter(paddle.zeros_like(dets_num), img, keep.astype(dets_num.dtype), overwrite=False)
        return paddle.gather(dets, idx), paddle.gather(dets_orig, idx), new_num.astype("int32"), origin.astype("int32")


def _box_scale(scale_factor, image_index):
    """Per-row ``[sx, sy, sx, sy]`` from ``scale_factor [B,2]`` (y, x)."""
    sf = paddle.gather(scale_factor, image_index)
    return paddle.stack([sf[:, 1], sf[:, 0], sf[:, 1], sf[:, 0]], axis=1)


def _placeholder_row(dtype):
    """``[[label 0, score -1, 0, 0, 1, 1]]``, built from scalar fills (a constant list would become an op that
    Paddle Inference's oneDNN backend cannot run)."""
    zero = paddle.full([1, 1], 0.0, dtype=dtype)
    one = paddle.full([1, 1], 1.0, dtype=dtype)
    return paddle.concat([zero, -one, zero, zero, one, one], axis=1)


def _add_placeholder(dets, dets_num):
    """Exported programs (one image per run): append a detection with score -1 (always the last row)."""
    return paddle.concat([dets, _placeholder_row(dets.dtype)]), dets_num + 1


@register
class MaskPostProcess(object):
    """Paste ``[K,M,M]`` mask probabilities into the original image and threshold them (``>= binary_thresh``)."""

    def __init__(self, binary_thresh: float = 0.5, export_onnx: bool = False, assign_on_cpu: bool = False):
        self.binary_thresh = binary_thresh

    def paste_image(self, probs, boxes, height, width):
        """One image's masks: ``probs [k,M,M]``, ``boxes [k,4]`` (original pixels) -> uint8 ``[k,height,width]``."""
        hw = paddle.to_tensor(np.tile(np.array([[height, width]], dtype=np.int32), (probs.shape[0], 1)))
        return ops.paste_masks(probs, boxes, hw, (int(height), int(width)), self.binary_thresh)

    def __call__(self, probs, boxes, dets_num, origin_shape):
        """All images at once on a shared canvas (exported programs, where sizes are tensors): ``probs
        [K,M,M]`` pasted at ``boxes [K,4]`` -> uint8 ``[K, H_max, W_max]``; rows of image i are valid in
        ``[:h_i, :w_i]``."""
        img = box_utils.roi_image_index(dets_num)
        hw = paddle.gather(origin_shape, img)
        canvas = origin_shape.max(axis=0)
        return ops.paste_masks(probs, boxes, hw, (canvas[0], canvas[1]), self.binary_thresh)
