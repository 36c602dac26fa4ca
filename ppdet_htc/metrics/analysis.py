"""Where the AP goes: per-class precision-recall curves, a COCO error breakdown and a confusion matrix.

The error breakdown follows the analysis Hoiem et al. made popular and that COCO's and mmdetection's
analysis tools draw: each step removes one kind of error and the precision-recall curve (and its area,
the AP) rises accordingly.

====  =====================================================================================================
C75   PR at IoU 0.75 (the strict metric)
C50   PR at IoU 0.50 (COCO's AP50)
Loc   PR at IoU 0.10: localisation errors forgiven (duplicate detections still count as errors)
Sim   Loc, plus detections on an object of another class of the *same supercategory* are not counted
Oth   Loc, plus detections on an object of *any* other class are not counted (class confusion removed)
BG    Oth, plus detections on background removed: precision 1 up to the recall that was reached
FN    every remaining error removed, i.e. also the missed objects: precision 1 everywhere
====  =====================================================================================================

"Not counted" is done as COCO does it for crowd regions: the other classes' objects become ignored
(crowd) objects of the analysed class, and a detection that overlaps one is neither right nor wrong.
All curves are for all object areas and 100 detections per image.

The confusion matrix (boxes) matches, per image, the detections with score >= ``score_thr`` one to one
with ground-truth objects at IoU >= ``iou_thr``: first each detection (best first) with an unmatched object
of its own class, then the remaining detections with remaining objects of another class. Rows are the
true class plus a last ``background`` row (detections matching no object, duplicates included), columns
the predicted class plus a last ``background`` column (objects no detection found).
"""
import contextlib
import copy
import io
import logging
import os

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..errors import ResultsFileError
from ..utils.io import write_json_atomic
from .coco_eval import _read_results
from .coco_gt import load_ground_truth

__all__ = ["ERROR_STEPS", "pr_curves", "error_breakdown", "confusion_matrix", "analyze_results", "load_gt"]

logger = logging.getLogger(__name__)

ERROR_STEPS = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def load_gt(anno, iou_type="bbox", image_root=None):
    """A ``COCO`` object from a path or an already loaded one.

    A path is read as evaluation reads it (``coco_gt.load_ground_truth``: the dataset loader's policy, so
    degenerate polygons and the like are dropped, not a crash); ``iou_type`` picks its box or mask ground
    truth, ``image_root`` lets missing image sizes be read from the images.
    """
    if isinstance(anno, COCO):
        return anno
    return load_ground_truth(anno, image_root=image_root, iou_types=(iou_type,)).coco(iou_type)


def _coco_from_dataset(dataset):
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _run_eval(coco_gt, results, iou_type, iou_thrs, cat_ids=None):
    """COCOeval precision ``[T, R, K]`` (area all, 100 detections), -1 entries (no ground truth) kept."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(results)) if results else None
        if coco_dt is None:
            return None
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        ev.params.maxDets = [100]
        ev.params.areaRng = [ev.params.areaRng[0]]
        ev.params.areaRngLbl = ["all"]
        if cat_ids is not None:
            ev.params.catIds = list(cat_ids)
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][:, :, :, 0, 0], ev.params.recThrs


def _check_results(results, iou_type):
    if not isinstance(results, list):
        raise ResultsFileError("{} results must be a list of COCO result dicts".format(iou_type))
    return [r for r in results if "segmentation" in r] if iou_type == "segm" else results


def _names(coco_gt, cat_ids):
    return [coco_gt.cats[c]["name"] for c in cat_ids]


def _ap(precision):
    """Mean of the valid (> -1) entries along recall; NaN where a class has no ground truth."""
    valid = precision > -1
    with np.errstate(invalid="ignore"):
        return np.where(valid.any(axis=0), np.where(valid, precision, 0).sum(axis=0) / np.maximum(
            valid.sum(axis=0), 1), np.nan)


def pr_curves(coco_gt, results, iou_type="bbox"):
    """Per-class precision at IoU 0.50, 0.75 and averaged over 0.50:0.95 (the curve of COCO's AP).

    Returns ``{"recall": [R], "categories": [K names], "precision": {"0.50": [R, K], "0.75": ...,
    "0.50:0.95": ...}, "ap": {same keys: [K]}}``; precision is -1 where a class has no ground truth.
    """
    coco_gt = load_gt(coco_gt, iou_type)
    results = _check_results(results, iou_type)
    cat_ids = sorted(coco_gt.getCatIds())
    out = _run_eval(coco_gt, results, iou_type, IOU_THRESHOLDS)
    recall = np.linspace(0.0, 1.0, 101)
    if out is None:
        zeros = np.zeros((len(recall), len(cat_ids)))
        prec = {"0.50": zeros, "0.75": zeros, "0.50:0.95": zeros}
    else:
        p, recall = out
        mean = np.where((p > -1).all(axis=0), p.mean(axis=0), -1.0)
        prec = {"0.50": p[0], "0.75": p[5], "0.50:0.95": mean}
    return {"recall": recall, "categories": _names(coco_gt, cat_ids), "precision": prec,
            "ap": {k: _ap(v) for k, v in prec.items()}}


def _ignore_other_classes(coco_gt, cat_id, same_supercategory_only):
    """Ground truth where objects of other classes (or of the same supercategory) become ignored regions
    of ``cat_id``: detections on them no longer count as false positives."""
    dataset = copy.copy(coco_gt.dataset)
    super_of = {c["id"]: c.get("supercategory") for c in coco_gt.dataset["categories"]}
    anns = []
    for ann in coco_gt.dataset["annotations"]:
        other = ann["category_id"] != cat_id
        if other and (not same_supercategory_only or super_of.get(ann["category_id"]) == super_of[cat_id]):
            ann = dict(ann, category_id=cat_id, iscrowd=1, ignore=1)
        anns.append(ann)
    dataset["annotations"] = anns
    return _coco_from_dataset(dataset)


def error_breakdown(coco_gt, results, iou_type="bbox"):
    """Precision-recall curves of the steps in ``ERROR_STEPS`` (see the module docstring).

    Returns ``{"recall": [R], "categories": [K], "steps": ERROR_STEPS, "precision": [7, R, K] (0 where a
    class has no ground truth), "ap": {step: [K]}, "mean_ap": {step: float}}``.
    """
    coco_gt = load_gt(coco_gt, iou_type)
    results = _check_results(results, iou_type)
    cat_ids = sorted(coco_gt.getCatIds())
    k = len(cat_ids)
    recall = np.linspace(0.0, 1.0, 101)
    prec = np.zeros((len(ERROR_STEPS), len(recall), k))
    has_gt = np.array([bool(coco_gt.getAnnIds(catIds=[c], iscrowd=False)) for c in cat_ids], dtype=bool)
    if results:
        base, recall = _run_eval(coco_gt, results, iou_type, [0.75, 0.5, 0.1])
        prec[0:3] = base
        for j, cat_id in enumerate(cat_ids):
            own = [r for r in results if r["category_id"] == cat_id]
            if not own:
                continue
            for step, same_super in ((3, True), (4, False)):
                gt = _ignore_other_classes(coco_gt, cat_id, same_super)
                out = _run_eval(gt, own, iou_type, [0.1], cat_ids=[cat_id])
                prec[step, :, j] = out[0][0, :, 0]
        prec[prec < 0] = 0.0
        prec[5] = (prec[4] > 0).astype(np.float64)  # background removed: precision 1 up to the recall reached
    prec[6] = 1.0  # nothing missed either
    prec[:, :, ~has_gt] = 0.0
    ap = {s: prec[i].mean(axis=0) for i, s in enumerate(ERROR_STEPS)}
    mean_ap = {s: float(v[has_gt].mean()) if has_gt.any() else 0.0 for s, v in ap.items()}
    return {"recall": recall, "categories": _names(coco_gt, cat_ids), "steps": ERROR_STEPS, "precision": prec,
            "ap": ap, "mean_ap": mean_ap, "has_gt": has_gt}


def _box_iou(a, b):
    """IoU of ``[n, 4]`` and ``[m, 4]`` x, y, w, h boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, 0:1], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, 1:2], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def confusion_matrix(coco_gt, bbox_results, score_thr=0.3, iou_thr=0.5):
    """``(matrix [K+1, K+1] int, names)``: rows true class (+ background), columns predicted (+ background).

    Detections overlapping a crowd region by IoU >= ``iou_thr`` and matching nothing else are left out.
    """
    coco_gt = load_gt(coco_gt)
    cat_ids = sorted(coco_gt.getCatIds())
    index = {c: i for i, c in enumerate(cat_ids)}
    bg = len(cat_ids)
    matrix = np.zeros((bg + 1, bg + 1), dtype=np.int64)
    dets_by_image = {}
    for r in bbox_results:
        if r["score"] >= score_thr and r["category_id"] in index:
            dets_by_image.setdefault(r["image_id"], []).append(r)
    for im_id in coco_gt.getImgIds():
        anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[im_id]))
        gts = [a for a in anns if not a.get("iscrowd", 0)]
        crowd = [a for a in anns if a.get("iscrowd", 0)]
        dets = sorted(dets_by_image.get(im_id, []), key=lambda r: -r["score"])
        if not dets:
            for g in gts:
                matrix[index[g["category_id"]], bg] += 1
            continue
        gt_of = _match(dets, gts, iou_thr)
        crowd_iou = _box_iou([d["bbox"] for d in dets], [g["bbox"] for g in crowd]) if crowd else None
        for i, det in enumerate(dets):
            pred = index[det["category_id"]]
            if gt_of[i] >= 0:
                matrix[index[gts[gt_of[i]]["category_id"]], pred] += 1
            elif crowd_iou is None or crowd_iou[i].max() < iou_thr:
                matrix[bg, pred] += 1
        found = set(int(j) for j in gt_of if j >= 0)
        for j, g in enumerate(gts):
            if j not in found:
                matrix[index[g["category_id"]], bg] += 1
    return matrix, _names(coco_gt, cat_ids) + ["background"]


def _match(dets, gts, iou_thr):
    """Ground-truth index per detection (-1: none). Same-class matches first (best score first, highest
    IoU), then the remaining detections take remaining objects of other classes (class confusion)."""
    gt_of = np.full(len(dets), -1, dtype=np.int64)
    if not gts:
        return gt_of
    ious = _box_iou([d["bbox"] for d in dets], [g["bbox"] for g in gts])
    same = np.array([[d["category_id"] == g["category_id"] for g in gts] for d in dets], dtype=bool)
    taken = np.zeros(len(gts), dtype=bool)
    for allowed in (same, ~same):
        for i in range(len(dets)):
            if gt_of[i] >= 0:
                continue
            cand = np.where(allowed[i] & ~taken, ious[i], -1.0)
            j = int(np.argmax(cand))
            if cand[j] >= iou_thr:
                gt_of[i], taken[j] = j, True
    return gt_of


def analyze_results(anno_path, bbox_json=None, mask_json=None, output_dir=".", score_thr=0.3, iou_thr=0.5,
                    image_root=None):
    """Write the analysis pictures (PNG) and ``analysis.json`` into ``output_dir``; return the written paths.

    Per result file: ``pr_curves_<type>.png`` (per class, IoU 0.50 / 0.75 / 0.50:0.95),
    ``error_breakdown_<type>.png`` (all classes) and ``error_breakdown_<type>_per_class.png``; from the boxes:
    ``confusion_matrix.png`` (detections with score >= ``score_thr``, IoU >= ``iou_thr``). The ground truth
    is read as evaluation reads it (see :func:`load_gt`); unreadable result files are a ``ResultsFileError``.
    """
    from ..utils import plots

    if bbox_json is None and mask_json is None:
        raise ValueError("analyze_results needs bbox_json and/or mask_json")
    types = tuple(t for t, path in (("bbox", bbox_json), ("segm", mask_json)) if path is not None)
    if isinstance(anno_path, COCO):
        gts = {t: anno_path for t in types}
    else:
        gt = load_ground_truth(anno_path, image_root=image_root, iou_types=types)
        gts = {t: gt.coco(t) for t in types}
    os.makedirs(output_dir, exist_ok=True)
    written, summary = [], {"score_thr": score_thr, "iou_thr": iou_thr}
    for iou_type, path in (("bbox", bbox_json), ("segm", mask_json)):
        if path is None:
            continue
        coco_gt = gts[iou_type]
        results = _read_results(path, "bbox" if iou_type == "bbox" else "mask")
        curves = pr_curves(coco_gt, results, iou_type)
        written.append(plots.plot_pr_curves(curves, os.path.join(output_dir, "pr_curves_{}.png".format(iou_type)),
                                            title="{} precision-recall per class".format(iou_type)))
        errors = error_breakdown(coco_gt, results, iou_type)
        written += plots.plot_error_breakdown(errors, os.path.join(output_dir, "error_breakdown_{}.png".format(
            iou_type)), title="{} error breakdown".format(iou_type))
        summary[iou_type] = {
            "ap": {k: {n: _none_if_nan(v) for n, v in zip(curves["categories"], vals)}
                   for k, vals in curves["ap"].items()},
            "error_breakdown": {"mean_ap": errors["mean_ap"],
                                "per_class": {n: {s: float(errors["ap"][s][j]) for s in ERROR_STEPS}
                                              for j, n in enumerate(errors["categories"])}},
        }
        if iou_type == "bbox":
            matrix, names = confusion_matrix(coco_gt, results, score_thr, iou_thr)
            written.append(plots.plot_confusion_matrix(matrix, names, os.path.join(output_dir, "confusion_matrix.png"),
                                                       title="boxes, score >= {:g}, IoU >= {:g}".format(score_thr,
                                                                                                      iou_thr)))
            summary["confusion_matrix"] = {"names": names, "counts": matrix.tolist()}
    json_path = os.path.join(output_dir, "analysis.json")
    write_json_atomic(json_path, summary, indent=1)
    written.append(json_path)
    logger.info("analysis pictures in %s: %s", output_dir, ", ".join(os.path.basename(p) for p in written))
    return written


def _none_if_nan(v):
    v = float(v)
    return None if v != v else v
