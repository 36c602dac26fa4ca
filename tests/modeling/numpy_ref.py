"""Independent NumPy reference implementations of the detection ops, written from the specification.

Every function cites the section of ``shared/reference/SEMANTICS.md`` it implements and deliberately
follows the *text* of that section (per-sample / per-pixel formulations, float64 arithmetic, plain
Python loops where the spec describes a greedy procedure), not the package's Paddle code.

Conventions (SEMANTICS.md, header): boxes are ``[x1, y1, x2, y2]`` in continuous pixels, widths are
``x2 - x1`` (no ``+1``).

Several functions also return a *margin*: the smallest distance of a quantity that drives a
discrete decision (a threshold comparison, ``ceil``/``floor``) from its decision boundary. Float32
(Paddle) and float64 (here) can only disagree on a decision when that margin is tiny, so the tests
assert the margin is comfortable for their fixed-seed random inputs instead of relying on luck.
"""
import math

import numpy as np

BBOX_CLIP = math.log(1000.0 / 16.0)  # SEMANTICS.md 5.3 step 2 / 7.3


# ---------------------------------------------------------------------------------------------------
# 5.2 Anchors
# ---------------------------------------------------------------------------------------------------
def anchors_ref(height, width, size, stride, ratios=(0.5, 1.0, 2.0)):
    """Anchors ``[H, W, A, 4]`` of one FPN level (SEMANTICS.md 5.2).

    For each ratio r (= h/w) in order: ``w = sqrt(s^2/r)``, ``h = r*w``, cell anchor
    ``[-w/2, -h/2, w/2, h/2]`` (not rounded), shifted so the centre of cell (i, j) is at
    ``(j*stride, i*stride)`` (offset 0). Index order ``(i*W + j)*A + a``.
    """
    out = np.zeros((height, width, len(ratios), 4), dtype=np.float64)
    for i in range(height):
        for j in range(width):
            cx, cy = j * stride, i * stride
            for a, r in enumerate(ratios):
                w = math.sqrt(size * size / r)
                h = r * w
                out[i, j, a] = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    return out


# ---------------------------------------------------------------------------------------------------
# 7.3 Box coding, and the small geometric helpers used everywhere
# ---------------------------------------------------------------------------------------------------
def delta2bbox_ref(deltas, boxes, weights):
    """Decode deltas ``[R,4]`` on boxes ``[R,4]`` with weights (wx, wy, ww, wh) (SEMANTICS.md 7.3).

    ``dw = min(d2/ww, log(1000/16))`` (upper clamp only), same for dh; centre moves by ``dx*w``.
    """
    d = np.asarray(deltas, np.float64).reshape(-1, 4)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    wx, wy, ww, wh = [float(v) for v in weights]
    out = np.zeros_like(b)
    for r in range(b.shape[0]):
        w_r = b[r, 2] - b[r, 0]
        h_r = b[r, 3] - b[r, 1]
        cx = b[r, 0] + 0.5 * w_r
        cy = b[r, 1] + 0.5 * h_r
        dx = d[r, 0] / wx
        dy = d[r, 1] / wy
        dw = min(d[r, 2] / ww, BBOX_CLIP)
        dh = min(d[r, 3] / wh, BBOX_CLIP)
        px = dx * w_r + cx
        py = dy * h_r + cy
        pw = math.exp(dw) * w_r
        ph = math.exp(dh) * h_r
        out[r] = [px - pw / 2.0, py - ph / 2.0, px + pw / 2.0, py + ph / 2.0]
    return out


def bbox2delta_ref(src, tgt, weights):
    """Encode ``tgt`` relative to ``src`` (SEMANTICS.md 7.3, the inverse of delta2bbox, times weights):
    ``(wx*(gx-cx)/w, wy*(gy-cy)/h, ww*log(gw/w), wh*log(gh/h))``."""
    s = np.asarray(src, np.float64).reshape(-1, 4)
    g = np.asarray(tgt, np.float64).reshape(-1, 4)
    wx, wy, ww, wh = [float(v) for v in weights]
    sw, sh = s[:, 2] - s[:, 0], s[:, 3] - s[:, 1]
    scx, scy = s[:, 0] + 0.5 * sw, s[:, 1] + 0.5 * sh
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    gcx, gcy = g[:, 0] + 0.5 * gw, g[:, 1] + 0.5 * gh
    return np.stack(
        [wx * (gcx - scx) / sw, wy * (gcy - scy) / sh, ww * np.log(gw / sw), wh * np.log(gh / sh)], axis=1
    )


def clip_boxes_ref(boxes, hw):
    """Clip x to ``[0, w]`` and y to ``[0, h]`` per box (SEMANTICS.md 7.4 / 8.1; float bounds, no -1)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    hw = np.asarray(hw, np.float64).reshape(-1, 2)
    for r in range(b.shape[0]):
        h, w = hw[r]
        b[r, 0] = min(max(b[r, 0], 0.0), w)
        b[r, 2] = min(max(b[r, 2], 0.0), w)
        b[r, 1] = min(max(b[r, 1], 0.0), h)
        b[r, 3] = min(max(b[r, 3], 0.0), h)
    return b


def nonempty_ref(boxes, min_size=0.0):
    """Width and height both ``> min_size`` (SEMANTICS.md 7.4 train branch: ``x2-x1 > 0 and y2-y1 > 0``)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.array([(r[2] - r[0]) > min_size and (r[3] - r[1]) > min_size for r in b], dtype=bool)


def iou_pair(a, b):
    """IoU of two boxes without ``+1`` (SEMANTICS.md 5.3 step 5, 8.2 step 2, 11.2).

    Areas are ``w*h`` and 0 for inverted boxes; the intersection is 0 when the boxes do not overlap
    (or only touch); IoU is 0 when the intersection is 0.
    """
    ax1, ay1, ax2, ay2 = [float(v) for v in a]
    bx1, by1, bx2, by2 = [float(v) for v in b]
    if bx1 > ax2 or bx2 < ax1 or by1 > ay2 or by2 < ay1:
        return 0.0
    iw = min(ax2, bx2) - max(ax1, bx1)
    ih = min(ay2, by2) - max(ay1, by1)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = (ax2 - ax1) * (ay2 - ay1) if (ax2 >= ax1 and ay2 >= ay1) else 0.0
    area_b = (bx2 - bx1) * (by2 - by1) if (bx2 >= bx1 and by2 >= by1) else 0.0
    union = area_a + area_b - inter
    if union <= 0:
        return 0.0
    return inter / union


def iou_matrix_ref(a, b):
    """IoU matrix ``[N, M]`` with :func:`iou_pair` (SEMANTICS.md 11.2: no +1, 0 without intersection)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    out = np.zeros((a.shape[0], b.shape[0]), dtype=np.float64)
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            out[i, j] = iou_pair(a[i], b[j])
    return out


def greedy_nms(boxes, thresh):
    """Greedy NMS over boxes already in score order (SEMANTICS.md 5.3 step 5 / 8.2 step 2).

    A box is kept if its IoU with every previously kept box is ``<= thresh`` (suppressed when
    ``> thresh``). Returns ``(kept positions, margin)``, margin = min |IoU - thresh| over all comparisons.
    """
    kept = []
    margin = np.inf
    for i in range(len(boxes)):
        ok = True
        for k in kept:
            iou = iou_pair(boxes[k], boxes[i])
            margin = min(margin, abs(iou - thresh))
            if iou > thresh:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept, margin


# ---------------------------------------------------------------------------------------------------
# 5.3 Proposal generation and 5.4 cross-level collection
# ---------------------------------------------------------------------------------------------------
def generate_proposals_ref(scores, deltas, anchors, im_hw, pre_nms_top_n, post_nms_top_n, nms_thresh, min_size):
    """One image, one level (SEMANTICS.md 5.3, ``generate_proposals_v2`` with variances 1).

    scores ``[A,H,W]`` logits, deltas ``[4A,H,W]`` (channels 4a..4a+3 = dx,dy,dw,dh of anchor a),
    anchors ``[H,W,A,4]``, im_hw ``(h, w)`` float. Steps: sort logits descending, keep
    ``pre_nms_top_n``; decode (dw, dh clamped at log(1000/16)); clip to ``[0,w]x[0,h]``; keep
    ``x2-x1 >= m`` and ``y2-y1 >= m`` with ``m = max(min_size, 1)``; greedy NMS (IoU > thresh
    suppressed); keep ``post_nms_top_n``. If nothing survives the size filter the result is one box
    ``[0,0,0,0]`` with score 0 (Q11).

    Returns ``(boxes [N,4], scores [N], margin)`` in descending score order; margin covers the
    size filter, NMS decisions and the pre-NMS cut (gap between the last kept and first dropped logit).
    """
    A, H, W = scores.shape
    s = np.asarray(scores, np.float64).transpose(1, 2, 0).reshape(-1)  # index (i*W + j)*A + a
    d = np.asarray(deltas, np.float64).reshape(A, 4, H, W).transpose(2, 3, 0, 1).reshape(-1, 4)
    an = np.asarray(anchors, np.float64).reshape(-1, 4)
    order = np.argsort(-s, kind="stable")
    margin = np.inf
    if pre_nms_top_n > 0 and len(order) > pre_nms_top_n:
        margin = min(margin, s[order[pre_nms_top_n - 1]] - s[order[pre_nms_top_n]])
        order = order[:pre_nms_top_n]
    h_img, w_img = float(im_hw[0]), float(im_hw[1])
    m = max(float(min_size), 1.0)
    cand_boxes, cand_scores = [], []
    for idx in order:
        x1, y1, x2, y2 = an[idx]
        aw, ah = x2 - x1, y2 - y1
        cx, cy = x1 + aw / 2.0, y1 + ah / 2.0
        dx, dy, dw, dh = d[idx]
        pcx, pcy = dx * aw + cx, dy * ah + cy
        pw = math.exp(min(dw, BBOX_CLIP)) * aw
        ph = math.exp(min(dh, BBOX_CLIP)) * ah
        box = [pcx - pw / 2.0, pcy - ph / 2.0, pcx + pw / 2.0, pcy + ph / 2.0]
        box = [min(max(box[0], 0.0), w_img), min(max(box[1], 0.0), h_img),
               min(max(box[2], 0.0), w_img), min(max(box[3], 0.0), h_img)]
        bw, bh = box[2] - box[0], box[3] - box[1]
        margin = min(margin, abs(bw - m), abs(bh - m))
        if bw >= m and bh >= m:
            cand_boxes.append(box)
            cand_scores.append(s[idx])
    if not cand_boxes:
        return np.zeros((1, 4)), np.zeros((1,)), margin
    kept, nms_margin = greedy_nms(cand_boxes, nms_thresh)
    margin = min(margin, nms_margin)
    kept = kept[:post_nms_top_n] if post_nms_top_n > 0 else kept
    return np.asarray([cand_boxes[k] for k in kept]), np.asarray([cand_scores[k] for k in kept]), margin


def collect_top_ref(level_boxes, level_scores, top_n):
    """Cross-level collection for one image (SEMANTICS.md 5.4).

    Concatenate levels in order; if the total exceeds ``top_n`` keep the ``top_n`` highest scores,
    otherwise keep everything. Returns ``(boxes [N,4], scores [N], margin)`` (margin = score gap at the cut).
    """
    boxes = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in level_boxes])
    scores = np.concatenate([np.asarray(s, np.float64).reshape(-1) for s in level_scores])
    if len(scores) <= top_n:
        return boxes, scores, np.inf
    order = np.argsort(-scores, kind="stable")
    margin = scores[order[top_n - 1]] - scores[order[top_n]]
    keep = order[:top_n]
    return boxes[keep], scores[keep], margin


# ---------------------------------------------------------------------------------------------------
# 6.1 Level assignment and 6.2 RoIAlign
# ---------------------------------------------------------------------------------------------------
def fpn_level_ref(rois, min_level=2, max_level=5, refer_level=4, refer_scale=224, eps=1e-6):
    """FPN level of each RoI (SEMANTICS.md 6.1, CPU epsilon 1e-6 per Q13).

    ``area = (x2-x1)(y2-y1)`` (0 if inverted), ``lvl = floor(log2(sqrt(area)/refer_scale + eps) + refer_level)``
    clamped to ``[min_level, max_level]``. Returns ``(levels [R] int, margin)`` where margin is the
    distance of the unfloored value from the nearest integer (only for RoIs not clamped away from it).
    """
    rois = np.asarray(rois, np.float64).reshape(-1, 4)
    levels = np.zeros(rois.shape[0], dtype=np.int64)
    margin = np.inf
    for r, (x1, y1, x2, y2) in enumerate(rois):
        w, h = x2 - x1, y2 - y1
        area = w * h if (w >= 0 and h >= 0) else 0.0
        v = math.log2(math.sqrt(area) / refer_scale + eps) + refer_level
        lvl = math.floor(v)
        if min_level - 1 <= v <= max_level + 1:
            margin = min(margin, abs(v - round(v)))
        levels[r] = min(max(lvl, min_level), max_level)
    return levels, margin


def _bilinear_taps_roi(coord, size):
    """Per-axis RoIAlign bilinear taps (SEMANTICS.md 6.2) for sample coordinates ``coord``.

    Returns ``(valid, low, high, w_low, w_high)``: a sample is invalid (contributes 0) if
    ``coord < -1`` or ``coord > size``; negatives are clamped to 0; if ``floor(coord) >= size-1``
    both taps are ``size-1`` with no interpolation.
    """
    coord = np.asarray(coord, np.float64)
    valid = (coord >= -1.0) & (coord <= size)
    c = np.maximum(coord, 0.0)
    low = np.floor(c).astype(np.int64)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    high = np.where(at_end, size - 1, low + 1)
    c = np.where(at_end, low.astype(np.float64), c)
    frac = c - low
    return valid, low, high, 1.0 - frac, frac


def roi_align_single_ref(feat, roi, output_size, spatial_scale, sampling_ratio=0):
    """RoIAlign (aligned=True) of one RoI on one image's feature ``[C,H,W]`` (SEMANTICS.md 6.2).

    ``xs = x1*s - 0.5``, ``rw = (x2-x1)*s`` (no minimum), bins ``rw/P``; ``ceil(rh/P) x ceil(rw/P)``
    samples per bin when ``sampling_ratio <= 0``; sample ``y = ys + ph*bh + (iy+0.5)*bh/gh``;
    every sample is bilinearly interpolated on its own (4 taps, border rules of
    :func:`_bilinear_taps_roi`), and the bin value is ``sum / max(gh*gw, 1)``.

    Returns ``(out [C,P,P], margin)``; margin = distance of ``rh/P`` and ``rw/P`` from a positive
    integer (where ``ceil`` decides the sample count) when adaptive sampling is used.
    """
    feat = np.asarray(feat, np.float64)
    C, H, W = feat.shape
    P = int(output_size)
    x1, y1, x2, y2 = [float(v) for v in roi]
    s = float(spatial_scale)
    xs, ys = x1 * s - 0.5, y1 * s - 0.5
    rw, rh = (x2 - x1) * s, (y2 - y1) * s
    bw, bh = rw / P, rh / P
    margin = np.inf
    if sampling_ratio > 0:
        gh = gw = int(sampling_ratio)
    else:
        gh, gw = int(math.ceil(rh / P)), int(math.ceil(rw / P))
        for v in (rh / P, rw / P):
            if v >= 0.5:  # ceil is fragile just above a positive integer
                margin = min(margin, abs(v - round(v)))
            elif v > 0:  # ... and near 0 only if the size itself is at rounding level
                margin = min(margin, np.inf if v > 1e-6 else v)
    count = max(gh * gw, 1)
    out = np.zeros((C, P, P), dtype=np.float64)
    if gh <= 0 or gw <= 0:
        return out, margin
    for ph in range(P):
        for pw in range(P):
            acc = np.zeros(C, dtype=np.float64)
            for iy in range(gh):
                y = ys + ph * bh + (iy + 0.5) * bh / gh
                vy, yl, yh, wyl, wyh = _bilinear_taps_roi(y, H)
                if not vy:
                    continue
                for ix in range(gw):
                    x = xs + pw * bw + (ix + 0.5) * bw / gw
                    vx, xl, xh, wxl, wxh = _bilinear_taps_roi(x, W)
                    if not vx:
                        continue
                    acc += (
                        wyl * wxl * feat[:, yl, xl]
                        + wyl * wxh * feat[:, yl, xh]
                        + wyh * wxl * feat[:, yh, xl]
                        + wyh * wxh * feat[:, yh, xh]
                    )
            out[:, ph, pw] = acc / count
    return out, margin


def roi_align_ref(feat, boxes, boxes_num, output_size, spatial_scale, sampling_ratio=0):
    """RoIAlign over a batch (SEMANTICS.md 6.2): RoIs are image-major, ``boxes_num[b]`` RoIs per image.

    Returns ``(out [R,C,P,P], margin)``.
    """
    feat = np.asarray(feat, np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    img = np.repeat(np.arange(len(boxes_num)), np.asarray(boxes_num, np.int64))
    assert len(img) == len(boxes)
    out = np.zeros((len(boxes), feat.shape[1], output_size, output_size), dtype=np.float64)
    margin = np.inf
    for r in range(len(boxes)):
        out[r], m = roi_align_single_ref(feat[img[r]], boxes[r], output_size, spatial_scale, sampling_ratio)
        margin = min(margin, m)
    return out, margin


# ---------------------------------------------------------------------------------------------------
# 8.2 Multi-class NMS
# ---------------------------------------------------------------------------------------------------
def multiclass_nms_ref(bboxes, scores, rois_num, score_threshold, nms_threshold, keep_top_k, background_label=-1):
    """``multiclass_nms3`` in LoD form (SEMANTICS.md 8.2), nms_top_k = -1, normalized IoU, eta 1.

    Per image and class c (``c != background_label``): candidates with ``score > score_threshold``,
    stable sort by score descending, greedy NMS (kept while IoU with every kept box ``<= nms_threshold``);
    if the image total exceeds ``keep_top_k`` keep the ``keep_top_k`` best over classes by score.
    Output rows of an image: class ascending, then RoI index ascending.

    Returns ``(rows, per_image_counts, margin)`` where rows is a list of tuples
    ``(image, class, roi_index_in_input, score, x1, y1, x2, y2)``.
    """
    bboxes = np.asarray(bboxes, np.float64)
    scores = np.asarray(scores, np.float64)
    R, C = scores.shape
    rows, counts = [], []
    margin = np.inf
    start = 0
    for b, n in enumerate(np.asarray(rois_num, np.int64)):
        dets = []  # (score, class, index)
        for c in range(C):
            if c == background_label:
                continue
            sc = scores[start:start + n, c]
            if n:
                margin = min(margin, float(np.min(np.abs(sc - score_threshold))))
            cand = [i for i in range(n) if sc[i] > score_threshold]
            cand.sort(key=lambda i: -sc[i])  # Python sort is stable
            kept, m = greedy_nms([bboxes[start + i, c] for i in cand], nms_threshold)
            margin = min(margin, m)
            dets.extend((sc[cand[k]], c, cand[k]) for k in kept)
        if keep_top_k > -1 and len(dets) > keep_top_k:
            dets.sort(key=lambda t: -t[0])
            margin = min(margin, dets[keep_top_k - 1][0] - dets[keep_top_k][0])
            dets = dets[:keep_top_k]
        dets.sort(key=lambda t: (t[1], t[2]))
        for score, c, i in dets:
            rows.append((b, c, start + i, score) + tuple(bboxes[start + i, c]))
        counts.append(len(dets))
        start += n
    return rows, counts, margin


# ---------------------------------------------------------------------------------------------------
# 9.4 Mask pasting
# ---------------------------------------------------------------------------------------------------
def grid_sample_value(prob, gx, gy):
    """``F.grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False)`` of one map
    ``prob [M,M]`` at normalized coordinates ``gx, gy`` (same-shape arrays) (SEMANTICS.md 9.4).

    Source coordinate ``u = (g+1)*M/2 - 0.5``; the four taps ``floor(u)``, ``floor(u)+1`` (per axis)
    are weighted bilinearly and taps outside ``0..M-1`` contribute 0.
    """
    prob = np.asarray(prob, np.float64)
    Mh, Mw = prob.shape
    u = (np.asarray(gx, np.float64) + 1.0) * Mw / 2.0 - 0.5
    v = (np.asarray(gy, np.float64) + 1.0) * Mh / 2.0 - 0.5
    u0 = np.floor(u).astype(np.int64)
    v0 = np.floor(v).astype(np.int64)
    fu = u - u0
    fv = v - v0
    out = np.zeros(np.broadcast(u, v).shape, dtype=np.float64)
    for dv, wv in ((0, 1.0 - fv), (1, fv)):
        for du, wu in ((0, 1.0 - fu), (1, fu)):
            tu, tv = u0 + du, v0 + dv
            ok = (tu >= 0) & (tu < Mw) & (tv >= 0) & (tv < Mh)
            tap = prob[np.clip(tv, 0, Mh - 1), np.clip(tu, 0, Mw - 1)]
            out += np.where(ok, wv * wu * tap, 0.0)
    return out


def paste_mask_values_ref(prob, box, canvas_hw):
    """Sampled value of every canvas pixel for one detection (SEMANTICS.md 9.4).

    Pixel (px, py) samples at ``gx = ((px+0.5) - x1)/(x2-x1)*2 - 1``, ``gy`` likewise, over the whole
    canvas ``[H, W]``. Returns ``[H, W]`` float64.
    """
    H, W = int(canvas_hw[0]), int(canvas_hw[1])
    x1, y1, x2, y2 = [float(v) for v in box]
    px = np.arange(W, dtype=np.float64)[None, :]
    py = np.arange(H, dtype=np.float64)[:, None]
    gx = ((px + 0.5) - x1) / (x2 - x1) * 2.0 - 1.0
    gy = ((py + 0.5) - y1) / (y2 - y1) * 2.0 - 1.0
    gx, gy = np.broadcast_arrays(gx, gy)
    return grid_sample_value(prob, gx, gy)


def paste_masks_ref(probs, boxes, image_hw, canvas_hw, threshold=0.5):
    """Binary masks ``[K,H,W]`` (SEMANTICS.md 9.4, with the Q3 product decision: each detection uses
    its own image's ``(h, w)``): ``value >= threshold`` inside ``[0,w) x [0,h)``, 0 elsewhere.

    Returns ``(masks uint8 [K,H,W], values float64 [K,H,W])``.
    """
    H, W = int(canvas_hw[0]), int(canvas_hw[1])
    K = len(probs)
    masks = np.zeros((K, H, W), dtype=np.uint8)
    values = np.zeros((K, H, W), dtype=np.float64)
    for k in range(K):
        values[k] = paste_mask_values_ref(probs[k], boxes[k], (H, W))
        h, w = int(image_hw[k][0]), int(image_hw[k][1])
        inside = np.zeros((H, W), dtype=bool)
        inside[:h, :w] = True
        masks[k] = ((values[k] >= threshold) & inside).astype(np.uint8)
    return masks, values


# ---------------------------------------------------------------------------------------------------
# 11.2 Anchor labelling and sampling
# ---------------------------------------------------------------------------------------------------
def label_anchors_ref(iou, positive_overlap, negative_overlap, allow_low_quality=True):
    """Anchor labels from a ``[G,N]`` IoU matrix (SEMANTICS.md 11.2).

    ``matched = max over gt``, ``argmax`` = matched gt (first on ties). Label 1 if ``matched >= pos``,
    0 if ``-1 < matched < neg``, else -1. Low-quality matches: for each gt, every anchor whose IoU
    equals that gt's maximum IoU (and is > 0) becomes 1.
    """
    iou = np.asarray(iou)
    G, N = iou.shape
    matches = np.zeros(N, dtype=np.int64)
    labels = np.full(N, -1, dtype=np.int64)
    for n in range(N):
        col = iou[:, n]
        best = col[0]
        best_g = 0
        for g in range(1, G):
            if col[g] > best:
                best, best_g = col[g], g
        matches[n] = best_g
        if best >= positive_overlap:
            labels[n] = 1
        elif -1 < best < negative_overlap:
            labels[n] = 0
    if allow_low_quality:
        for g in range(G):
            gmax = iou[g].max() if N else 0
            if gmax > 0:
                labels[iou[g] == gmax] = 1
    return matches, labels


def sample_counts_ref(labels, num_samples, fg_fraction, bg_label):
    """Expected sample sizes (SEMANTICS.md 11.2 / 11.3 step 4): positives are labels other than -1 and
    ``bg_label``, negatives equal ``bg_label``; ``n_fg = min(#pos, int(num*frac))``,
    ``n_bg = min(#neg, num - n_fg)``. Returns ``(pos_indices, neg_indices, n_fg, n_bg)``."""
    labels = np.asarray(labels)
    pos = np.nonzero((labels != -1) & (labels != bg_label))[0]
    neg = np.nonzero(labels == bg_label)[0]
    n_fg = min(len(pos), int(num_samples * fg_fraction))
    n_bg = min(len(neg), num_samples - n_fg)
    return pos, neg, n_fg, n_bg
