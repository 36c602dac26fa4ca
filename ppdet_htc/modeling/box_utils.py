"""Box encoding/decoding and geometry in Paddle tensors (``[x1, y1, x2, y2]``, no ``+1``)."""
import math

import paddle

__all__ = ["delta2bbox", "bbox2delta", "clip_boxes", "bbox_overlaps", "nonempty_mask", "roi_image_index",
           "known_empty", "count_per_image", "top_k_per_image", "gather_mask"]

BBOX_CLIP = math.log(1000.0 / 16)


def known_empty(t):
    """True when ``t`` has no rows and that is known now (dynamic mode). In an exported (static) program
    sizes are only known at run time, so the general code path must handle the empty case itself."""
    return paddle.in_dynamic_mode() and t.shape[0] == 0


def delta2bbox(deltas, boxes, weights):
    """Apply class-agnostic deltas ``[R,4]`` (dx, dy, dw, dh) to boxes ``[R,4]``.

    ``dx/wx`` etc.; log-size deltas are clamped from above at ``log(1000/16)`` only.
    Returns ``[R,4]`` boxes ``[cx - w/2, cy - h/2, cx + w/2, cy + h/2]``.
    """
    if known_empty(boxes):  # Paddle 2.x cannot stack empty tensors
        return paddle.zeros([0, 4], dtype=deltas.dtype)
    wx, wy, ww, wh = [float(w) for w in weights]
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    dx = deltas[:, 0] / wx
    dy = deltas[:, 1] / wy
    dw = paddle.clip(deltas[:, 2] / ww, max=BBOX_CLIP)
    dh = paddle.clip(deltas[:, 3] / wh, max=BBOX_CLIP)
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    pred_w = paddle.exp(dw) * widths
    pred_h = paddle.exp(dh) * heights
    return paddle.stack(
        [
            pred_ctr_x - 0.5 * pred_w,
            pred_ctr_y - 0.5 * pred_h,
            pred_ctr_x + 0.5 * pred_w,
            pred_ctr_y + 0.5 * pred_h,
        ],
        axis=1,
    )


def bbox2delta(src, tgt, weights):
    """Regression targets that map ``src`` boxes ``[R,4]`` onto ``tgt`` ``[R,4]`` (inverse of delta2bbox)."""
    if known_empty(src):
        return paddle.zeros([0, 4], dtype=src.dtype)
    wx, wy, ww, wh = [float(w) for w in weights]
    src_w = src[:, 2] - src[:, 0]
    src_h = src[:, 3] - src[:, 1]
    src_ctr_x = src[:, 0] + 0.5 * src_w
    src_ctr_y = src[:, 1] + 0.5 * src_h
    tgt_w = tgt[:, 2] - tgt[:, 0]
    tgt_h = tgt[:, 3] - tgt[:, 1]
    tgt_ctr_x = tgt[:, 0] + 0.5 * tgt_w
    tgt_ctr_y = tgt[:, 1] + 0.5 * tgt_h
    dx = wx * (tgt_ctr_x - src_ctr_x) / src_w
    dy = wy * (tgt_ctr_y - src_ctr_y) / src_h
    dw = ww * paddle.log(tgt_w / src_w)
    dh = wh * paddle.log(tgt_h / src_h)
    return paddle.stack([dx, dy, dw, dh], axis=1)


def roi_image_index(rois_num):
    """Image index of every RoI, ``[R]`` int64, from per-image counts ``[B]``."""
    b = rois_num.shape[0] if paddle.in_dynamic_mode() else paddle.shape(rois_num)[0]
    return paddle.repeat_interleave(paddle.arange(b, dtype="int64"), rois_num.astype("int64"))


def gather_mask(mask, index):
    """``paddle.gather`` for bool tensors (Paddle 2.6 has no bool gather kernel)."""
    return paddle.gather(mask.astype("int32"), index).astype("bool")


def count_per_image(image_index, batch):
    """``[B]`` int32 number of rows per image from each row's image index ``[N]`` (no host round trip)."""
    if known_empty(image_index):
        return paddle.zeros([batch], dtype="int32")
    onehot = paddle.nn.functional.one_hot(image_index.astype("int64"), batch)
    return onehot.sum(axis=0).astype("int32")


def top_k_per_image(rows, image_index, batch, k):
    """The first ``k`` of ``rows`` of each image, image-major, keeping their order within an image.

    rows ``[N]`` (e.g. indices sorted by descending score), image_index ``[N]`` the image of each row.
    """
    if known_empty(rows):
        return rows
    # (In an exported program the count is a tensor and no branch is traced: the ops below handle no rows.)
    n = rows.shape[0] if paddle.in_dynamic_mode() else paddle.shape(rows)[0]
    position = paddle.arange(n, dtype="int64")
    order = paddle.argsort(image_index.astype("int64") * n + position)  # unique keys: a stable regroup
    image_sorted = paddle.gather(image_index.astype("int64"), order)
    counts = count_per_image(image_sorted, batch).astype("int64")
    start = paddle.cumsum(counts) - counts
    rank = position - paddle.gather(start, image_sorted)
    return paddle.gather(rows, paddle.gather(order, paddle.nonzero(rank < k).reshape([-1])))


def clip_boxes(boxes, im_hw_per_box):
    """Clip ``[R,4]`` boxes to ``[0, w] x [0, h]`` where ``im_hw_per_box`` is ``[R,2]`` (h, w)."""
    if known_empty(boxes):
        return boxes.reshape([0, 4])
    h = im_hw_per_box[:, 0]
    w = im_hw_per_box[:, 1]
    zero = paddle.zeros_like(h)
    x1 = paddle.maximum(paddle.minimum(boxes[:, 0], w), zero)
    y1 = paddle.maximum(paddle.minimum(boxes[:, 1], h), zero)
    x2 = paddle.maximum(paddle.minimum(boxes[:, 2], w), zero)
    y2 = paddle.maximum(paddle.minimum(boxes[:, 3], h), zero)
    return paddle.stack([x1, y1, x2, y2], axis=1)


def nonempty_mask(boxes, min_size=0.0):
    """``[R]`` bool: width and height both larger than ``min_size``."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return paddle.logical_and(w > min_size, h > min_size)


def bbox_overlaps(a, b):
    """IoU matrix ``[N,M]`` between boxes ``a [N,4]`` and ``b [M,4]`` (0 where they do not overlap)."""
    if known_empty(a) or known_empty(b):
        return paddle.zeros([a.shape[0], b.shape[0]], dtype="float32")
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    xy1 = paddle.maximum(a[:, None, :2], b[None, :, :2])
    xy2 = paddle.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = paddle.clip(xy2 - xy1, min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    union = area_a[:, None] + area_b[None, :] - inter
    iou = paddle.where(inter > 0, inter / paddle.clip(union, min=1e-10), paddle.zeros_like(inter))
    return iou
