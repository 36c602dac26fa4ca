"""Independent NumPy transcriptions of mmcv's CPU kernels (SEMANTICS_MMDET.md 3.3 and 5.5).

Written from the specification, deliberately plain: loops over boxes / kernel taps, float32 arithmetic in the
order mmcv evaluates it (NMS), float64 for the deformable convolution (its result is compared with a tolerance).
"""
import numpy as np


def stable_descending(scores):
    """Order of ``scores`` descending, equal scores by ascending index (the tie rule ops.batched_nms fixes)."""
    scores = np.asarray(scores)
    return np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))


def mmcv_nms(boxes, scores, iou_threshold):
    """mmcv ``nms_cpu`` (offset 0): greedy over descending scores, suppress later boxes with IoU > thr.

    All arithmetic in float32: ``areas = (x2-x1)*(y2-y1)``; ``inter = max(0, xx2-xx1) * max(0, yy2-yy1)``;
    ``ovr = inter / (area_i + area_j - inter)``; suppressed when ``ovr > f32(thr)``. Returns kept indices.
    """
    boxes = np.asarray(boxes, np.float32)
    order = stable_descending(scores)
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    thr = np.float32(iou_threshold)
    alive = np.ones(len(boxes), bool)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 for empty boxes: NaN, never > thr
        _greedy(order, x1, y1, x2, y2, areas, thr, alive)
    return order[alive]


def _greedy(order, x1, y1, x2, y2, areas, thr, alive):
    zero = np.float32(0)
    for a in range(len(order)):
        if not alive[a]:
            continue
        i = order[a]
        for b in range(a + 1, len(order)):
            if not alive[b]:
                continue
            j = order[b]
            w = max(zero, np.float32(min(x2[i], x2[j]) - max(x1[i], x1[j])))
            h = max(zero, np.float32(min(y2[i], y2[j]) - max(y1[i], y1[j])))
            inter = np.float32(w * h)
            ovr = np.float32(inter / np.float32(np.float32(areas[i] + areas[j]) - inter))
            if ovr > thr:
                alive[b] = False


def offset_boxes(boxes, idxs):
    """mmcv ``batched_nms``'s offset trick in float32: ``boxes + f32(idx) * (max(boxes) + 1)``."""
    boxes = np.asarray(boxes, np.float32)
    step = np.float32(boxes.max() + np.float32(1))
    return boxes + (np.asarray(idxs).astype(np.float32) * step)[:, None]


def mmcv_batched_nms(boxes, scores, idxs, iou_threshold, split_thr=10000):
    """mmcv ``batched_nms`` (class_agnostic False): fewer than ``split_thr`` boxes, one NMS on the offset boxes;
    otherwise one NMS per distinct idx (ascending) on its offset boxes, then the union by descending score."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    shifted = offset_boxes(boxes, idxs)
    if len(boxes) < split_thr:
        return mmcv_nms(shifted, scores, iou_threshold)
    idxs = np.asarray(idxs)
    kept = []
    for group in np.unique(idxs):
        rows = np.nonzero(idxs == group)[0]
        kept.append(rows[mmcv_nms(shifted[rows], np.asarray(scores)[rows], iou_threshold)])
    kept = np.concatenate(kept)
    return kept[stable_descending(np.asarray(scores)[kept])]


def bilinear_mmcv(img, h, w):
    """mmcv/DCN bilinear sample of ``img [C,H,W]`` at real (h, w): 0 if ``h <= -1 or h >= H or w <= -1 or
    w >= W``; otherwise the four neighbours with corner taps outside the image contributing 0."""
    C, H, W = img.shape
    if h <= -1 or h >= H or w <= -1 or w >= W:
        return np.zeros(C)
    h_low, w_low = int(np.floor(h)), int(np.floor(w))
    lh, lw = h - h_low, w - w_low
    out = np.zeros(C)
    for dy, dx, weight in ((0, 0, (1 - lh) * (1 - lw)), (0, 1, (1 - lh) * lw),
                           (1, 0, lh * (1 - lw)), (1, 1, lh * lw)):
        y, x = h_low + dy, w_low + dx
        if 0 <= y < H and 0 <= x < W:
            out += weight * img[:, y, x]
    return out


def deform_conv2d_mmcv(x, offset, weight, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1):
    """DCN v1 forward, one output pixel and one tap at a time (float64).

    Tap ``k = i*kw + j`` of deformable group g reads ``offset[:, g*2*kh*kw + 2k]`` (dy) and ``+1`` (dx); it samples
    at ``(ho*stride - pad + i*dil + dy, wo*stride - pad + j*dil + dx)``; then a grouped convolution of the samples.
    """
    x = np.asarray(x, np.float64)
    offset = np.asarray(offset, np.float64)
    weight = np.asarray(weight, np.float64)
    B, C, H, W = x.shape
    O, Cg, kh, kw = weight.shape
    Ho = (H + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    Wo = (W + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    assert offset.shape == (B, 2 * deformable_groups * kh * kw, Ho, Wo), offset.shape
    c_dg = C // deformable_groups
    Og = O // groups
    out = np.zeros((B, O, Ho, Wo))
    for b in range(B):
        for ho in range(Ho):
            for wo in range(Wo):
                cols = np.zeros((C, kh, kw))
                for g in range(deformable_groups):
                    chans = slice(g * c_dg, (g + 1) * c_dg)
                    for i in range(kh):
                        for j in range(kw):
                            k = i * kw + j
                            dy = offset[b, g * 2 * kh * kw + 2 * k, ho, wo]
                            dx = offset[b, g * 2 * kh * kw + 2 * k + 1, ho, wo]
                            h = ho * stride - padding + i * dilation + dy
                            w = wo * stride - padding + j * dilation + dx
                            cols[chans, i, j] = bilinear_mmcv(x[b, chans], h, w)
                for g in range(groups):
                    wg = weight[g * Og:(g + 1) * Og]
                    out[b, g * Og:(g + 1) * Og, ho, wo] = np.tensordot(wg, cols[g * Cg:(g + 1) * Cg], axes=3)
    return out
