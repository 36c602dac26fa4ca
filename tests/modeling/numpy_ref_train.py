"""Independent NumPy references of the *training* path (SEMANTICS.md §11, §7.4, §10.1), float64.

Written from the specification and from the product decisions documented in the package's docstrings
(mmdetection-style removal of ground-truth rows between stages), never by calling ``ppdet_htc``. The
geometric helpers (IoU, box coding, clipping, anchor labelling, RoIAlign) come from ``numpy_ref``.

Like ``numpy_ref``, functions that take a discrete decision (IoU threshold, non-empty test) return or
expose a *margin* so the tests can assert that float32 (Paddle) and float64 (here) cannot disagree.
"""
import numpy as np
import pycocotools.mask as mask_util

from . import numpy_ref as ref

# SEMANTICS.md 7.3: delta weights of the three cascade stages; 11.4 / 11.6: stage loss weights.
STAGE_DELTA_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))
STAGE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)
CASCADE_IOU = (0.5, 0.6, 0.7)


# ---------------------------------------------------------------------------------------------------
# Elementwise losses
# ---------------------------------------------------------------------------------------------------
def softmax_ce_ref(logits, labels):
    """Per-row ``-log softmax(logits)[label]`` (float64, max-subtracted)."""
    z = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64).reshape(-1)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(labels)), labels]


def bce_with_logits_ref(x, y):
    """Elementwise ``-(y log s(x) + (1-y) log(1-s(x)))`` in its stable form."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return np.maximum(x, 0.0) - x * y + np.log1p(np.exp(-np.abs(x)))


def smooth_l1_ref(d, beta):
    """``0.5 d^2 / beta`` if ``|d| < beta`` else ``|d| - 0.5 beta`` (SEMANTICS.md 11.2)."""
    d = np.abs(np.asarray(d, np.float64))
    return np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


# ---------------------------------------------------------------------------------------------------
# 11.3 Box sampling (BBoxAssigner, GT prepended)
# ---------------------------------------------------------------------------------------------------
def assign_image_ref(rois, gt, gt_cls, fg_thresh, bg_thresh, num_classes):
    """Labels of one image's candidates ``[gt; rois]`` (SEMANTICS.md 11.3 steps 1-3).

    Returns a dict: ``cand [N,4]`` (GT first), ``labels [N]`` (gt class if best IoU >= fg_thresh,
    ``num_classes`` if ``-1 < best < bg_thresh``, -1 otherwise; all background without GT),
    ``matches [N]`` (argmax gt, first on ties; 0 without GT), ``iou [G,N]``, ``n_gt``, and ``margin``
    (distance of the best IoUs from the thresholds).
    """
    rois = np.asarray(rois, np.float64).reshape(-1, 4)
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    gt_cls = np.asarray(gt_cls, np.int64).reshape(-1)
    g = len(gt)
    cand = np.concatenate([gt, rois]) if g else rois
    n = len(cand)
    if g == 0:
        return {"cand": cand, "labels": np.full(n, num_classes, np.int64), "matches": np.zeros(n, np.int64),
                "iou": np.zeros((0, n)), "n_gt": 0, "margin": np.inf}
    iou = ref.iou_matrix_ref(gt, cand)
    matches, flag = ref.label_anchors_ref(iou, fg_thresh, bg_thresh, allow_low_quality=False)
    labels = np.where(flag == 1, gt_cls[matches], np.where(flag == 0, num_classes, -1)).astype(np.int64)
    best = iou.max(axis=0)
    margin = float(np.min(np.abs(np.concatenate([best - fg_thresh, best - bg_thresh])))) if n else np.inf
    return {"cand": cand, "labels": labels, "matches": matches, "iou": iou, "n_gt": g, "margin": margin}


def sample_image_ref(labels, batch_size_per_im, fg_fraction, num_classes):
    """Deterministic sampling (``use_random=False``, SEMANTICS.md 11.3 step 4): the first
    ``n_fg = min(#fg, int(B*f))`` foreground candidates, then the first ``n_bg = min(#bg, B - n_fg)``
    background ones, in candidate order. If both are empty, the single index 0.

    Returns ``(keep, fg_pool, bg_pool, n_fg, n_bg)``.
    """
    labels = np.asarray(labels)
    fg_pool = np.nonzero((labels != -1) & (labels != num_classes))[0]
    bg_pool = np.nonzero(labels == num_classes)[0]
    n_fg = min(len(fg_pool), int(batch_size_per_im * fg_fraction))
    n_bg = min(len(bg_pool), batch_size_per_im - n_fg)
    keep = np.concatenate([fg_pool[:n_fg], bg_pool[:n_bg]]).astype(np.int64)
    if len(keep) == 0:
        keep = np.zeros(1, np.int64)
    return keep, fg_pool, bg_pool, n_fg, n_bg


def bbox_assign_ref(rois, rois_num, gt_boxes, gt_classes, fg_thresh, bg_thresh, batch_size_per_im,
                    fg_fraction, num_classes):
    """The whole BBoxAssigner with ``use_random=False`` over a batch (image-major output).

    Returns ``(out, per_image)``: ``out`` has ``rois, rois_num, labels, gt_boxes, gt_index, is_gt``
    (``gt_boxes`` zero rows for an image without GT); ``per_image`` the dicts of
    :func:`assign_image_ref` extended with ``keep, fg_pool, bg_pool, n_fg, n_bg``.
    """
    rois = np.asarray(rois, np.float64).reshape(-1, 4)
    starts = np.concatenate([[0], np.cumsum(np.asarray(rois_num, np.int64))])
    out = {k: [] for k in ("rois", "labels", "gt_boxes", "gt_index", "is_gt")}
    nums, per_image = [], []
    for b in range(len(rois_num)):
        gt = np.asarray(gt_boxes[b], np.float64).reshape(-1, 4)
        a = assign_image_ref(rois[starts[b]:starts[b + 1]], gt, gt_classes[b], fg_thresh, bg_thresh, num_classes)
        keep, fg_pool, bg_pool, n_fg, n_bg = sample_image_ref(a["labels"], batch_size_per_im, fg_fraction,
                                                              num_classes)
        a.update(keep=keep, fg_pool=fg_pool, bg_pool=bg_pool, n_fg=n_fg, n_bg=n_bg)
        per_image.append(a)
        out["rois"].append(a["cand"][keep])
        out["labels"].append(a["labels"][keep])
        out["gt_index"].append(a["matches"][keep])
        out["gt_boxes"].append(gt[a["matches"][keep]] if len(gt) else np.zeros((len(keep), 4)))
        out["is_gt"].append(keep < a["n_gt"])
        nums.append(len(keep))
    out = {k: np.concatenate(v) for k, v in out.items()}
    out["rois_num"] = np.asarray(nums, np.int64)
    return out, per_image


# ---------------------------------------------------------------------------------------------------
# 7.4 (train) refinement, ground-truth removal
# ---------------------------------------------------------------------------------------------------
def refine_ref(deltas, rois, rois_num, im_hw, weights):
    """Decode stage deltas on their RoIs with the stage weights, clip each box to its image's
    ``[0, w] x [0, h]`` (float ``im_shape``) (SEMANTICS.md 7.3, 7.4)."""
    img = np.repeat(np.arange(len(rois_num)), np.asarray(rois_num, np.int64))
    boxes = ref.delta2bbox_ref(deltas, rois, weights)
    return ref.clip_boxes_ref(boxes, np.asarray(im_hw, np.float64).reshape(-1, 2)[img])


def drop_gt_and_empty_ref(boxes, rois_num, is_gt):
    """Per image keep the rows that are not ground truth and have ``x2-x1 > 0`` and ``y2-y1 > 0``; an
    image with nothing left keeps its first row (the package's documented mmdetection-style choice,
    replacing the reference's no-op of SEMANTICS.md §14 Q2). Returns ``(boxes, counts)``."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    is_gt = np.asarray(is_gt, bool).reshape(-1)
    keep_all = ref.nonempty_ref(boxes) & ~is_gt
    start = 0
    rows, counts = [], []
    for n in np.asarray(rois_num, np.int64):
        mine = np.arange(start, start + n)
        kept = mine[keep_all[mine]]
        if len(kept) == 0 and n > 0:
            kept = mine[:1]
        rows.append(kept)
        counts.append(len(kept))
        start += n
    rows = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    return boxes[rows], np.asarray(counts, np.int64)


# ---------------------------------------------------------------------------------------------------
# 11.4 box losses
# ---------------------------------------------------------------------------------------------------
def box_loss_ref(logits, deltas, rois, labels, gt_boxes, weights, num_classes):
    """Unweighted stage losses: CE averaged over all M sampled RoIs, and
    ``sum_fg sum_4 |delta - bbox2delta(roi, gt, w)| / M`` on the class-agnostic deltas (0 without fg)."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    m = len(labels)
    cls = softmax_ce_ref(logits, labels).mean()
    fg = (labels >= 0) & (labels < num_classes)
    if not fg.any():
        return cls, 0.0
    tgt = ref.bbox2delta_ref(np.asarray(rois)[fg], np.asarray(gt_boxes)[fg], weights)
    reg = np.abs(np.asarray(deltas, np.float64)[fg] - tgt).sum() / m
    return cls, reg


# ---------------------------------------------------------------------------------------------------
# 11.5 mask targets, the mask branch with information flow (9.2), mask loss
# ---------------------------------------------------------------------------------------------------
def polygon_target_ref(polygons, box, m):
    """One RoI's target: polygons shifted by the box corner, scaled by ``m / max(size, 0.1)``,
    rasterised and merged by pycocotools (SEMANTICS.md 11.5). Returns ``[m, m]`` float32."""
    x1, y1, x2, y2 = [float(v) for v in box]
    sx, sy = m / max(x2 - x1, 0.1), m / max(y2 - y1, 0.1)
    moved = []
    for p in polygons:
        q = np.asarray(p, np.float64).reshape(-1, 2)
        moved.append(np.stack([(q[:, 0] - x1) * sx, (q[:, 1] - y1) * sy], 1).reshape(-1).tolist())
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(moved, m, m))).astype(np.float32)


def mask_targets_ref(rois, rois_num, labels, gt_index, gt_segms, num_classes, m):
    """Foreground rows (label in ``[0, C)``) in sampled order: ``(rois, counts per image, labels,
    targets [N, m, m])``, targets from :func:`polygon_target_ref` of the matched object."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    img = np.repeat(np.arange(len(rois_num)), np.asarray(rois_num, np.int64))
    fg = np.nonzero((labels >= 0) & (labels < num_classes))[0]
    targets = np.stack([polygon_target_ref(gt_segms[img[r]][gt_index[r]], rois[r], m) for r in fg]) \
        if len(fg) else np.zeros((0, m, m), np.float32)
    counts = np.bincount(img[fg], minlength=len(rois_num))
    return np.asarray(rois)[fg], counts, labels[fg], targets


def conv2d_ref(x, w, b, pad):
    """Stride-1 convolution ``x [N,C,H,W]`` * ``w [O,C,k,k]`` + ``b`` with zero padding ``pad``."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    out = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + ho, j:j + wo], w[:, :, i, j])
    return out + np.asarray(b, np.float64)[None, :, None, None]


def deconv2x2_ref(x, w, b):
    """Transposed convolution, kernel 2, stride 2, ``w [C_in, C_out, 2, 2]``:
    ``out[n, o, 2i+ki, 2j+kj] = sum_c x[n, c, i, j] w[c, o, ki, kj] + b[o]``."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, _, h, wd = x.shape
    out = np.zeros((n, w.shape[1], 2 * h, 2 * wd))
    for ki in range(2):
        for kj in range(2):
            out[:, :, ki::2, kj::2] = np.einsum("nchw,co->nohw", x, w[:, :, ki, kj])
    return out + np.asarray(b, np.float64)[None, :, None, None]


def _relu(x):
    return np.maximum(x, 0.0)


def htc_mask_logits_ref(x, stages, t):
    """Logits of mask stage ``t`` on RoI features ``x [K,C,S,S]`` (SEMANTICS.md 9.2 / 11.5).

    ``f_0 = convs_0(x)``, ``f_s = convs_s(x + ReLU(conv_res_s(f_{s-1})))`` for ``s = 1..t`` (every conv
    3x3 + ReLU, conv_res 1x1 + ReLU); stages ``< t`` only produce features; logits
    ``conv_logits_t(ReLU(deconv_t(f_t)))``. ``stages[s]``: dict of ``(weight, bias)`` pairs ``convs``
    (list), ``res`` (None for s = 0), ``upsample`` and ``logits``.
    """
    prev = None
    for s in range(t + 1):
        p = stages[s]
        h = np.asarray(x, np.float64)
        if prev is not None:
            h = h + _relu(conv2d_ref(prev, p["res"][0], p["res"][1], 0))
        for w, b in p["convs"]:
            h = _relu(conv2d_ref(h, w, b, (w.shape[2] - 1) // 2))
        prev = h
    p = stages[t]
    up = _relu(deconv2x2_ref(prev, *p["upsample"]))
    return conv2d_ref(up, p["logits"][0], p["logits"][1], 0)


def mask_loss_ref(logits, labels, targets, weight):
    """``weight * mean over [N, M, M]`` of BCE-with-logits on each RoI's class channel (0 without RoIs)."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(labels) == 0:
        return 0.0
    chosen = np.asarray(logits, np.float64)[np.arange(len(labels)), labels]
    return weight * bce_with_logits_ref(chosen, targets).mean()


# ---------------------------------------------------------------------------------------------------
# 10.1 semantic loss
# ---------------------------------------------------------------------------------------------------
def nearest_resize_ref(labels, h, w):
    """Nearest-neighbour resize of ``[B, H, W]`` labels: output ``(i, j)`` reads
    ``(floor(i*H/h), floor(j*W/w))`` (the ``align_corners=False`` 'nearest' convention)."""
    labels = np.asarray(labels)
    hi, wi = labels.shape[1:]
    iy = np.minimum(np.floor(np.arange(h) * hi / h), hi - 1).astype(np.int64)
    ix = np.minimum(np.floor(np.arange(w) * wi / w), wi - 1).astype(np.int64)
    return labels[:, iy][:, :, ix]


def semantic_loss_ref(seg_logits, labels, ignore_index=255, loss_weight=0.2):
    """``loss_weight *`` mean CE over the non-ignored pixels of ``seg_logits [B,K,h,w]``; labels
    ``[B,H,W]`` or ``[B,1,H,W]`` resized by :func:`nearest_resize_ref` when the size differs; 0 when
    every pixel is ignored."""
    labels = np.asarray(labels).astype(np.int64)
    if labels.ndim == 4:
        labels = labels[:, 0]
    k, h, w = seg_logits.shape[1:]
    if labels.shape[1:] != (h, w):
        labels = nearest_resize_ref(labels, h, w)
    z = np.asarray(seg_logits, np.float64).transpose(0, 2, 3, 1).reshape(-1, k)
    lab = labels.reshape(-1)
    valid = lab != ignore_index
    if not valid.any():
        return 0.0
    return loss_weight * softmax_ce_ref(z[valid], lab[valid]).mean()


# ---------------------------------------------------------------------------------------------------
# 11.2 RPN loss
# ---------------------------------------------------------------------------------------------------
def flatten_rpn_level(scores, deltas):
    """One image, one level: logits ``[A,H,W] -> [H*W*A]`` and deltas ``[4A,H,W] -> [H*W*A, 4]`` in
    anchor order ``(i*W + j)*A + a`` (channels ``4a..4a+3`` are anchor a's dx, dy, dw, dh)."""
    a, h, w = scores.shape
    s = np.asarray(scores, np.float64).transpose(1, 2, 0).reshape(-1)
    d = np.asarray(deltas, np.float64).reshape(a, 4, h, w).transpose(2, 3, 0, 1).reshape(-1, 4)
    return s, d


def rpn_loss_ref(scores, deltas, anchors, gt_boxes, batch_size_per_im=256, fg_fraction=0.5,
                 positive_overlap=0.7, negative_overlap=0.3, use_smooth_l1=True, beta=1.0 / 9.0):
    """RPN losses with deterministic sampling (SEMANTICS.md 11.2).

    scores: per level ``[B,A,H,W]``; deltas: per level ``[B,4A,H,W]``; anchors: per level
    ``[H,W,A,4]``; gt_boxes: per image ``[G,4]``. Per image: anchors labelled by
    ``label_anchors_ref`` (with low-quality matches), no GT -> all negative; the first
    ``min(#pos, int(N*f))`` positives and first ``min(#neg, N - n_fg)`` negatives (anchor order).
    ``cls = sum BCE(sampled) / (N*B)``, ``reg = sum_pos sum_4 l(pred - bbox2delta(anchor, gt, 1)) / (N*B)``
    with ``l`` smooth-L1 (beta) or L1. Returns ``(cls, reg, margin, info)``; margin covers the
    thresholds and the low-quality rule (gap between each gt's best IoU and its next lower IoU; anchors
    inside a gt box tie exactly, in float32 as in float64).
    """
    anchors = np.concatenate([np.asarray(a, np.float64).reshape(-1, 4) for a in anchors])
    batch = scores[0].shape[0]
    cls, reg, margin = 0.0, 0.0, np.inf
    info = []
    for b in range(batch):
        flat = [flatten_rpn_level(s[b], d[b]) for s, d in zip(scores, deltas)]
        logit = np.concatenate([f[0] for f in flat])
        pred = np.concatenate([f[1] for f in flat])
        gt = np.asarray(gt_boxes[b], np.float64).reshape(-1, 4)
        low_quality = 0
        if len(gt) == 0:
            labels = np.zeros(len(anchors), np.int64)
            matches = np.zeros(len(anchors), np.int64)
        else:
            iou = ref.iou_matrix_ref(gt, anchors)
            matches, labels = ref.label_anchors_ref(iou, positive_overlap, negative_overlap, True)
            best = iou.max(axis=0)
            low_quality = int(((labels == 1) & (best < positive_overlap)).sum())
            margin = min(margin, float(np.min(np.abs(best - positive_overlap))),
                         float(np.min(np.abs(best - negative_overlap))))
            for row in iou:  # low-quality rule: exact ties are fine (same in float32), near ties are not
                below = row[row < row.max()]
                if below.size:
                    margin = min(margin, row.max() - below.max())
        pos = np.nonzero(labels == 1)[0]
        neg = np.nonzero(labels == 0)[0]
        n_fg = min(len(pos), int(batch_size_per_im * fg_fraction))
        n_bg = min(len(neg), batch_size_per_im - n_fg)
        pos, neg = pos[:n_fg], neg[:n_bg]
        cls += bce_with_logits_ref(logit[pos], 1.0).sum() + bce_with_logits_ref(logit[neg], 0.0).sum()
        if len(pos):
            tgt = ref.bbox2delta_ref(anchors[pos], gt[matches[pos]], (1.0, 1.0, 1.0, 1.0))
            diff = pred[pos] - tgt
            reg += (smooth_l1_ref(diff, beta) if use_smooth_l1 else np.abs(diff)).sum()
        info.append({"pos": pos, "neg": neg, "n_pos_pool": int((labels == 1).sum()),
                     "n_neg_pool": int((labels == 0).sum()), "n_low_quality": low_quality})
    norm = float(batch_size_per_im * batch)
    return cls / norm, reg / norm, margin, info
