"""The one place that calls Paddle's fused detection kernels.

Every function here is a thin, documented wrapper (shapes in the docstring) around a native
kernel from ``paddle.vision.ops`` / ``paddle._C_ops``, so that the rest of the package never
depends on a particular Paddle version's API, and a faster kernel replaces one function.
All functions run on CPU and GPU, have no Python loop over boxes, and accept empty inputs.
"""
import math

import paddle
import paddle.nn.functional as F
from paddle import _C_ops
from paddle.vision import ops as vops

_PADDLE_MAJOR = int(paddle.__version__.split(".")[0]) if paddle.__version__[0].isdigit() else 3

__all__ = [
    "roi_align",
    "distribute_fpn_proposals",
    "generate_proposals",
    "multiclass_nms",
    "paste_masks",
]


def roi_align(feat, boxes, boxes_num, output_size, spatial_scale, sampling_ratio=0, aligned=True):
    """RoIAlign on one feature map.

    feat ``[B,C,H,W]``; boxes ``[R,4]`` (x1,y1,x2,y2 in input pixels, image-major);
    boxes_num ``[B]`` int32 (RoIs per image). Returns ``[R,C,P,P]``.
    ``aligned=True`` shifts by half a pixel; ``sampling_ratio<=0`` samples ``ceil(roi/P)`` points per bin.
    A RoI of zero width or height gives NaN on Paddle's CPU kernel (0 on GPU); the reference ran on the
    same kernels, so this is kept (such boxes end up degenerate and are dropped after NMS).
    """
    return vops.roi_align(
        feat,
        boxes,
        boxes_num,
        output_size,
        spatial_scale=float(spatial_scale),
        sampling_ratio=int(sampling_ratio),
        aligned=bool(aligned),
    )


def distribute_fpn_proposals(rois, rois_num, min_level, max_level, refer_level, refer_scale):
    """Assign each RoI to an FPN level ``floor(log2(sqrt(area)/refer_scale + eps) + refer_level)``.

    rois ``[R,4]``, rois_num ``[B]`` int32. Returns ``(rois_per_level, restore_index, num_per_level)``:
    lists over levels ``min_level..max_level`` of ``[R_l,4]`` and ``[B]`` int32, and ``[R,1]`` int32
    such that ``concat(level outputs)[restore_index]`` is back in input order. ``eps`` is the kernel's
    (1e-6 on CPU, 1e-8 on GPU), as in the reference.
    """
    levels = max_level - min_level + 1
    if rois.shape[0] == 0:
        empty = [rois.reshape([0, 4]) for _ in range(levels)]
        return empty, paddle.zeros([0, 1], dtype="int32"), [paddle.zeros_like(rois_num) for _ in range(levels)]
    compact = _PADDLE_MAJOR < 3  # Paddle 2.x's kernel fails when an image of the batch has no RoI
    if compact:
        keep = paddle.nonzero(rois_num > 0).reshape([-1])
        nums_in = paddle.gather(rois_num, keep)
    else:
        nums_in = rois_num
    multi_rois, restore_index, nums = vops.distribute_fpn_proposals(
        rois, min_level, max_level, refer_level, refer_scale, pixel_offset=False, rois_num=nums_in
    )
    if compact:
        full = paddle.zeros_like(rois_num)
        nums = [paddle.scatter(full, keep, n.astype(full.dtype)) for n in nums]
    return multi_rois, restore_index, nums


def generate_proposals(
    scores, deltas, im_shape, anchors, variances, pre_nms_top_n, post_nms_top_n, nms_thresh, min_size, eta=1.0
):
    """RPN proposals for one FPN level, all images of the batch at once.

    scores ``[B,A,H,W]`` objectness logits; deltas ``[B,4A,H,W]``; im_shape ``[B,2]`` float (h, w)
    used for clipping; anchors/variances ``[H,W,A,4]``. Per image: top ``pre_nms_top_n`` by score,
    decode, clip, drop boxes smaller than ``max(min_size, 1)``, NMS at ``nms_thresh``, keep
    ``post_nms_top_n``. Returns ``(rois [N,4], scores [N,1], rois_num [B] int32)``, image-major.
    """
    rois, probs, rois_num = vops.generate_proposals(
        scores,
        deltas,
        im_shape,
        anchors,
        variances,
        pre_nms_top_n=int(pre_nms_top_n),
        post_nms_top_n=int(post_nms_top_n),
        nms_thresh=float(nms_thresh),
        min_size=float(min_size),
        eta=float(eta),
        pixel_offset=False,
        return_rois_num=True,
    )
    return rois, probs, rois_num


def multiclass_nms(
    bboxes,
    scores,
    rois_num,
    score_threshold,
    nms_threshold,
    keep_top_k,
    nms_top_k=-1,
    normalized=True,
    nms_eta=1.0,
    background_label=-1,
):
    """Per-class greedy NMS for a batch of images (``multiclass_nms3``, LoD form).

    bboxes ``[R,C,4]`` (class-specific boxes), scores ``[R,C]``, rois_num ``[B]`` int32 (rows per
    image). Per image and class: candidates with score > ``score_threshold``, NMS at IoU
    ``nms_threshold`` (no +1 when ``normalized``), then the best ``keep_top_k`` over classes.
    Returns ``(dets [K,6] = [label, score, x1, y1, x2, y2], index [K,1], dets_num [B] int32)`` where
    ``index`` is the position in the flattened ``[R, C]`` input (``row * C + class``); within an image
    rows are ordered by class, then input row.
    """
    out, index, nms_num = _C_ops.multiclass_nms3(
        bboxes,
        scores,
        rois_num,
        float(score_threshold),
        int(nms_top_k),
        int(keep_top_k),
        float(nms_threshold),
        bool(normalized),
        float(nms_eta),
        int(background_label),
    )
    return out, index, nms_num


def _tent_weights(coords, size):
    """Bilinear tap weights ``[..., size]``: ``max(0, 1 - |u - j|)`` for source index j (zero padding)."""
    taps = paddle.arange(size, dtype="float32")
    return F.relu(1.0 - paddle.abs(coords.unsqueeze(-1) - taps))


def _source_coords(pixels, lo, hi, size):
    """Source coordinate (``grid_sample``, ``align_corners=False``) of pixel centres in a box edge range."""
    grid = (pixels + 0.5 - lo) / (hi - lo) * 2 - 1
    return ((grid + 1) * size - 1) / 2


def paste_masks(probs, boxes, image_hw, canvas_hw, threshold=0.5, max_elements=1 << 26):
    """Paste ``[K,M,M]`` mask probabilities into ``[K,H,W]`` binary masks (uint8).

    boxes ``[K,4]`` in output pixels; image_hw ``[K,2]`` int32: (h, w) of the image each mask belongs to
    (pixels at or beyond it stay 0); canvas_hw ``(H, W)`` python ints. Pixel (px, py) takes the bilinear
    value (zero padding, ``align_corners=False``, exactly the sample ``F.grid_sample`` would take) at
    ``u = ((px+0.5-x1)/(x2-x1)*2-1 + 1)*M/2 - 0.5`` (same for y) and is 1 where it is ``>= threshold``.

    Bilinear sampling on an axis-aligned grid is separable, so each mask is ``Wy @ P @ Wx^T`` with
    tent-weight matrices: two batched matmuls instead of a per-pixel gather. Only a band of rows around
    each box is computed (a value can only reach 0.5 for pixel centres inside the box; the band grows for
    lower thresholds), and the band is
    placed into the canvas with one row ``gather``. Chunks of detections bound the temporary memory.
    """
    K = probs.shape[0]
    H, W = int(canvas_hw[0]), int(canvas_hw[1])
    if K == 0 or H == 0 or W == 0:
        return paddle.zeros([K, H, W], dtype="uint8")
    M = probs.shape[-1]
    boxes = boxes.astype("float32")
    probs = probs.astype("float32")
    # Below a threshold of 0.5 a pixel slightly outside the box can still reach it: widen the band by
    # (0.5 - threshold) source cells.
    margin = max(0.0, 0.5 - float(threshold)) * (boxes[:, 3] - boxes[:, 1]) / M
    y_lo = paddle.clip(paddle.floor(boxes[:, 1] - margin) - 1, 0, H)
    y_hi = paddle.clip(paddle.ceil(boxes[:, 3] + margin) + 1, 0, H)
    band = int((y_hi - y_lo).max().numpy())  # one host read per batch: the band height
    band = max(1, min(band, H))
    y_lo = paddle.minimum(y_lo, paddle.full_like(y_lo, H - band))
    img_h = image_hw[:, 0].astype("float32")
    img_w = image_hw[:, 1].astype("float32")
    cols = paddle.arange(W, dtype="float32")
    rows = paddle.arange(band, dtype="float32")
    chunk = max(1, int(max_elements // (band * W)))
    pieces = []
    for start in range(0, K, chunk):
        end = min(K, start + chunk)
        b = boxes[start:end]
        py = y_lo[start:end, None] + rows[None, :]  # [n, band] canvas rows
        wy = _tent_weights(_source_coords(py, b[:, 1:2], b[:, 3:4], M), M)  # [n, band, M]
        wx = _tent_weights(_source_coords(cols[None, :], b[:, 0:1], b[:, 2:3], M), M)  # [n, W, M]
        vals = paddle.matmul(wy, paddle.matmul(probs[start:end], wx, transpose_y=True))  # [n, band, W]
        inside = (py < img_h[start:end, None]).unsqueeze(2) & (cols[None, None, :] < img_w[start:end, None, None])
        pieces.append(((vals >= threshold) & inside).astype("uint8"))
    on = paddle.concat(pieces).reshape([K * band, W])
    on = paddle.concat([on, paddle.zeros([1, W], dtype="uint8")])  # row K*band = all zeros
    # Canvas row (k, y) takes band row k*band + (y - y_lo[k]) when inside the band, else the zero row.
    rel = paddle.arange(H, dtype="int64")[None, :] - y_lo.astype("int64")[:, None]  # [K, H]
    src = paddle.arange(K, dtype="int64")[:, None] * band + rel
    src = paddle.where((rel >= 0) & (rel < band), src, paddle.full_like(src, K * band))
    return paddle.gather(on, src.reshape([-1])).reshape([K, H, W])


def log_scale_clip():
    """Upper clamp for predicted log-width/height deltas (``log(1000/16)``)."""
    return math.log(1000.0 / 16)
