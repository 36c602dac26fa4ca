"""Parity of two runs' detections (fast runtime vs the exact path): the tolerance the project states."""
import numpy as np

BOX_IOU = 0.98
SCORE_TOL = 0.005


def box_iou_xyxy(a, b):
    """IoU of one box ``a`` [4] with boxes ``b`` [n,4] (x1, y1, x2, y2)."""
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-12)


def unmatched(ref_dets, dets, min_score=0.0):
    """Reference detections (score >= ``min_score``) with no same-class detection in ``dets`` of the same image
    at box IoU >= 0.98 and score within 0.005: a list of ``(image index, label, score)``."""
    missing = []
    for i, (r, d) in enumerate(zip(ref_dets, dets)):
        for box, score, label in zip(r["boxes"], r["scores"], r["labels"]):
            if score < min_score:
                continue
            same = d["labels"] == label
            ok = bool(same.any()) and bool(((box_iou_xyxy(box, d["boxes"][same]) >= BOX_IOU)
                                            & (np.abs(d["scores"][same] - score) <= SCORE_TOL)).any())
            if not ok:
                missing.append((i, int(label), float(score)))
    return missing


def assert_runs_agree(exact, fast, nms_score_threshold):
    """The stated tolerance between two runs of one golden case (dicts with ``dets``, ``coco``, ``bbox``,
    ``segm``): every detection above the NMS score threshold plus the tolerance matched both ways, and each of
    the 12 COCO box and mask metrics within 0.1 points."""
    from ppdet_htc.metrics.coco_eval import STAT_NAMES, evaluate_results

    threshold = nms_score_threshold + SCORE_TOL
    assert unmatched(exact["dets"], fast["dets"], threshold) == []
    assert unmatched(fast["dets"], exact["dets"], threshold) == []
    for iou_type in ("bbox", "segm"):
        aps = []
        for run in (exact, fast):
            stats, _ = evaluate_results(run["coco"], [dict(r) for r in run[iou_type]], iou_type)
            aps.append(np.array([stats[k] for k in STAT_NAMES[:12]], dtype=np.float64))
        assert np.abs(aps[0] - aps[1]).max() <= 0.001, (iou_type, aps)
