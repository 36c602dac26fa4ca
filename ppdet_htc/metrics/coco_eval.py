"""COCO box/mask evaluation with the semantics of PaddleDetection's ``COCOMetric`` (docs/semantics.md, "Evaluation").

Per-image model outputs are turned into COCO result dicts, written as ``bbox.json``/``mask.json``
and scored with pycocotools (``loadRes`` then ``COCOeval`` evaluate/accumulate/summarize).

Which images count: like the reference, ``COCOeval`` keeps its default parameters, so *every* image
of the annotation file is evaluated, including images the model never saw. Ground truth on such
images counts as missed; evaluate a subset by giving an annotation file that holds only that subset.

Product decisions followed here: no fake detections are added for images without detections, and
masks arrive per image at that image's own original size.
"""
import contextlib
import io
import json
import logging
import os

import cv2
import numpy as np
from pycocotools import mask as mask_util
from pycocotools.cocoeval import COCOeval

from ..errors import AnnotationError, ConfigError, ResultsFileError
from ..utils.io import write_json_atomic
from .coco_gt import load_ground_truth

__all__ = [
    "STAT_NAMES",
    "IOU_TYPES",
    "COCOMetric",
    "detections_to_coco",
    "json_eval",
    "gt_to_results",
    "evaluate_results",
    "format_metrics",
    "build_clsid2catid",
]

logger = logging.getLogger(__name__)

# Order of ``COCOeval.stats``.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")
RESULT_FILES = {"bbox": "bbox.json", "segm": "mask.json"}

# The descriptions pycocotools prints for the 12 stats, as (kind, IoU, area, maxDets).
_STAT_LINES = (
    ("Average Precision  (AP)", "0.50:0.95", "all", 100),
    ("Average Precision  (AP)", "0.50", "all", 100),
    ("Average Precision  (AP)", "0.75", "all", 100),
    ("Average Precision  (AP)", "0.50:0.95", "small", 100),
    ("Average Precision  (AP)", "0.50:0.95", "medium", 100),
    ("Average Precision  (AP)", "0.50:0.95", "large", 100),
    ("Average Recall     (AR)", "0.50:0.95", "all", 1),
    ("Average Recall     (AR)", "0.50:0.95", "all", 10),
    ("Average Recall     (AR)", "0.50:0.95", "all", 100),
    ("Average Recall     (AR)", "0.50:0.95", "small", 100),
    ("Average Recall     (AR)", "0.50:0.95", "medium", 100),
    ("Average Recall     (AR)", "0.50:0.95", "large", 100),
)


# ----------------------------------------------------------------------------------------------
# Model outputs -> COCO result dicts
# ----------------------------------------------------------------------------------------------


def build_clsid2catid(coco_gt):
    """Contiguous label ``i`` -> ``i``-th category id of the annotation file (reference order)."""
    return {i: int(cat_id) for i, cat_id in enumerate(coco_gt.getCatIds())}


def _normalise_clsid2catid(clsid2catid):
    """Accept a dict (keys may be strings after a JSON round trip) or a sequence of category ids."""
    if isinstance(clsid2catid, dict):
        return {int(k): int(v) for k, v in clsid2catid.items()}
    return {i: int(v) for i, v in enumerate(clsid2catid)}


def _image_id(det):
    try:
        im_id = det["im_id"]
    except KeyError:
        raise KeyError(f"detection dict has no 'im_id' key (keys: {sorted(det)})") from None
    arr = np.asarray(im_id)
    if arr.size != 1:
        raise ValueError(f"'im_id' must be a single id, got shape {arr.shape}: {im_id!r}")
    return int(arr.reshape(-1)[0])


def _check_detection(det, im_id):
    """Shapes must agree, otherwise results would silently pair the wrong score/label/mask."""
    for key in ("boxes", "scores", "labels"):
        if key not in det:
            raise KeyError(f"detections of image {im_id} have no {key!r} key (keys: {sorted(det)})")
    boxes = np.asarray(det["boxes"])
    scores = np.asarray(det["scores"]).reshape(-1)
    labels = np.asarray(det["labels"]).reshape(-1)
    k = len(scores)
    if boxes.size == 0 and k == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape != (k, 4):
        raise ValueError(f"image {im_id}: 'boxes' must have shape [{k}, 4] to match 'scores', got {boxes.shape}")
    if labels.shape != (k,):
        raise ValueError(f"image {im_id}: 'labels' must have {k} entries to match 'scores', got {labels.shape}")
    masks = det.get("masks")
    if masks is not None:
        masks = np.asarray(masks)
        if k == 0:  # nothing to encode, whatever shape the empty array has
            masks = None
        elif masks.ndim != 3 or masks.shape[0] != k:
            raise ValueError(f"image {im_id}: 'masks' must have shape [{k}, h, w], got {masks.shape}")
    return boxes, scores, labels, masks


def _category_ids(labels, mapping, im_id):
    """Map contiguous labels to category ids; an unknown label is an error that names it."""
    unknown = sorted(set(np.unique(labels).tolist()) - set(mapping))
    if unknown:
        known = f"{min(mapping)}..{max(mapping)}" if mapping else "none"
        raise ConfigError(
            f"image {im_id}: label(s) {unknown} not in clsid2catid (known labels: {known}): the model predicts "
            f"classes the annotation file's categories do not have; set num_classes to the number of categories"
        )
    return [mapping[label] for label in labels.tolist()]


def _encode_masks(masks):
    """RLE-encode all masks of one image in a single pycocotools call.

    ``encode`` wants a column-major ``[h, w, k]`` array, i.e. each mask transposed in memory. A whole-array
    numpy transpose of ``k`` full-image masks is slow (strided copy of hundreds of MB at 800x1333); OpenCV's
    blocked 2-D transpose per mask into one ``[k, w, h]`` buffer does the same copy several times faster.
    0/1 uint8 (or bool) masks, what the model returns, are used as they are; other values are binarised.
    """
    if masks.dtype == np.bool_:
        masks = masks.view(np.uint8)
    elif masks.dtype != np.uint8 or (masks.size and masks.max() > 1):
        masks = (masks != 0).astype(np.uint8)
    k, h, w = masks.shape
    columns = np.empty((k, w, h), dtype=np.uint8)
    if h and w:
        for i in range(k):  # one native call per mask; the buffer is written in place
            cv2.transpose(masks[i], columns[i])
    rles = mask_util.encode(np.transpose(columns, (2, 1, 0)))  # [h, w, k], Fortran-contiguous: no copy
    for rle in rles:
        rle["counts"] = rle["counts"].decode("utf-8")
    return rles


def detections_to_coco(dets, clsid2catid):
    """Turn per-image detections into COCO ``(bbox_results, mask_results)`` lists.

    ``dets`` is one per-image dict or a list of them (``im_id``, ``boxes`` [k,4] x1y1x2y2,
    ``scores`` [k], ``labels`` [k], ``masks`` [k,h,w] or None). Values are python floats taken from
    the float32 outputs, and the box width/height are computed in python, exactly as the reference.
    Rows with label < 0 (degenerate boxes marked by post-processing) are skipped, as in the
    reference; any other label missing from ``clsid2catid`` raises ``ValueError`` naming it.
    """
    if isinstance(dets, dict):
        dets = [dets]
    mapping = _normalise_clsid2catid(clsid2catid)
    bbox_results, mask_results = [], []
    for det in dets:
        im_id = _image_id(det)
        boxes, scores, labels, masks = _check_detection(det, im_id)
        keep = labels >= 0
        if not keep.all():
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            masks = masks[keep] if masks is not None else None
        if len(labels) == 0:
            continue
        cat_ids = _category_ids(labels, mapping, im_id)
        score_list = scores.tolist()
        for (x1, y1, x2, y2), cat_id, score in zip(boxes.tolist(), cat_ids, score_list):
            bbox_results.append(
                {"image_id": im_id, "category_id": cat_id, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            )
        if masks is not None:
            for rle, cat_id, score in zip(_encode_masks(masks), cat_ids, score_list):
                mask_results.append({"image_id": im_id, "category_id": cat_id, "segmentation": rle, "score": score})
    return bbox_results, mask_results


# ----------------------------------------------------------------------------------------------
# Scoring with pycocotools
# ----------------------------------------------------------------------------------------------


def _zero_stats():
    return {name: 0.0 for name in STAT_NAMES}


def _classwise_ap(coco_eval, coco_gt):
    """Per-category AP: mean of valid precision entries (all IoUs/recalls), area 'all', maxDets 100.

    ``None`` marks a category without (non-ignored) ground truth, where AP is undefined.
    """
    precision = coco_eval.eval["precision"]  # [T, R, K, A, M]
    area_index = coco_eval.params.areaRngLbl.index("all")
    maxdet_index = coco_eval.params.maxDets.index(100)
    table = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, area_index, maxdet_index]
        valid = p[p > -1]
        table[coco_gt.cats[cat_id]["name"]] = float(np.mean(valid)) if valid.size else None
    return table


def _empty_classwise(coco_gt):
    """Classwise table when nothing was detected: 0 where ground truth exists, undefined elsewhere."""
    table = {}
    for cat_id in sorted(coco_gt.getCatIds()):
        has_gt = bool(coco_gt.getAnnIds(catIds=[cat_id], iscrowd=False))
        table[coco_gt.cats[cat_id]["name"]] = 0.0 if has_gt else None
    return table


def evaluate_results(coco_gt, results, iou_type, classwise=False):
    """Score a list of COCO result dicts; returns ``(stats_dict, classwise_table_or_None)``.

    ``loadRes`` cannot take an empty list, so no results give all-zero stats and a warning.
    ``results`` is modified by ``loadRes`` (it adds ``id``/``area``); pass a copy to keep it.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if not results:
        logger.warning("COCO %s evaluation: no detections were produced; all metrics are 0.0", iou_type)
        return _zero_stats(), (_empty_classwise(coco_gt) if classwise else None)
    unknown_images = sorted({r["image_id"] for r in results} - set(coco_gt.getImgIds()))
    if unknown_images:
        raise ResultsFileError(
            f"{iou_type} results reference image id(s) {unknown_images[:10]} that are not in the annotation file"
        )
    # pycocotools prints progress and its own summary; we print one table of our own instead.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = {name: float(value) for name, value in zip(STAT_NAMES, coco_eval.stats)}
    table = _classwise_ap(coco_eval, coco_gt) if classwise else None
    return stats, table


def _evaluate_all(gt, results_by_type, classwise):
    """Evaluate each iou type against its ground truth (``gt.coco(iou_type)``, see ``coco_gt``); the dict
    layout is the one returned and written to metrics.json."""
    metrics = {}
    for iou_type, results in results_by_type.items():
        stats, table = evaluate_results(gt.coco(iou_type), results, iou_type, classwise)
        metrics[iou_type] = stats
        if table is not None:
            metrics[f"{iou_type}_classwise"] = table
    return metrics


# ----------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------


def _percent(value):
    """pycocotools uses -1 for 'no ground truth in this area range'; show that as n/a."""
    return "  n/a" if value is None or value < 0 else f"{100.0 * value:5.1f}"


def format_metrics(metrics):
    """Human-readable table: the 12 standard lines per iou type (percent, 1 decimal), then classwise AP."""
    lines = []
    for iou_type in IOU_TYPES:
        if iou_type not in metrics:
            continue
        lines.append(f"[{iou_type}]")
        for (kind, iou, area, max_dets), name in zip(_STAT_LINES, STAT_NAMES):
            value = metrics[iou_type][name]
            lines.append(f" {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] = {_percent(value)}")
        table = metrics.get(f"{iou_type}_classwise")
        if table is not None:
            width = max([len("category")] + [len(name) for name in table])
            lines.append(f"[{iou_type}] per-category AP")
            lines.append(f" {'category':<{width}} |    AP")
            lines.append(f" {'-' * width}-+------")
            for name, ap in table.items():
                lines.append(f" {name:<{width}} | {_percent(ap)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------


class COCOMetric:
    """Collect per-image detections during evaluation, then write result JSONs and score them.

    Results go to ``output_eval`` (the working directory if None): ``bbox.json``, ``mask.json`` and
    ``metrics.json`` (the dict ``accumulate`` returns), all written atomically. All images of the
    annotation file are evaluated (pycocotools defaults), as in the reference.
    """

    def __init__(self, anno_path, clsid2catid=None, output_eval=None, classwise=False, iou_types=("bbox", "segm"),
                 image_root=None):
        iou_types = (iou_types,) if isinstance(iou_types, str) else tuple(iou_types)
        bad = [t for t in iou_types if t not in IOU_TYPES]
        if bad or not iou_types:
            raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {iou_types!r}")
        self.anno_path = anno_path
        # Read and checked now, before any inference: what cannot be read stops here, degenerate parts are
        # dropped as the dataset loader drops them (``image_root`` lets missing image sizes be read).
        self.gt = load_ground_truth(anno_path, image_root=image_root, iou_types=iou_types)
        self.coco_gt = self.gt.coco(iou_types[0])
        self.clsid2catid = (
            build_clsid2catid(self.coco_gt) if clsid2catid is None else _normalise_clsid2catid(clsid2catid)
        )
        unknown_cats = sorted(set(self.clsid2catid.values()) - set(self.coco_gt.getCatIds()))
        if unknown_cats:
            raise ValueError(f"clsid2catid maps to category id(s) {unknown_cats} that are not in {anno_path}")
        self.output_eval = output_eval if output_eval is not None else os.getcwd()
        self.classwise = classwise
        self.iou_types = iou_types
        self.reset()

    def reset(self):
        """Forget collected detections and the last metrics (e.g. before the next epoch's evaluation)."""
        self.results = {iou_type: [] for iou_type in self.iou_types}
        self.metrics = {}

    def _check_against_gt(self, det):
        """Fail early (naming the image) instead of deep inside ``loadRes``/``COCOeval``."""
        im_id = _image_id(det)
        img = self.coco_gt.imgs.get(im_id)
        if img is None:
            raise ValueError(f"image id {im_id} is not in the annotation file {self.anno_path}")
        masks = det.get("masks")
        if "segm" in self.iou_types and masks is not None and "height" in img and "width" in img:
            size = tuple(np.shape(masks)[1:])
            if len(size) == 2 and size != (img["height"], img["width"]):
                raise AnnotationError(
                    f"{self.anno_path}: image {im_id}: masks are {size[0]}x{size[1]} but the image is "
                    f"{img['height']}x{img['width']} (masks must be at the original image size)"
                )

    def update(self, dets_list):
        """Add one per-image detection dict or a list of them (masks are RLE-encoded right away)."""
        if isinstance(dets_list, dict):
            dets_list = [dets_list]
        for det in dets_list:
            self._check_against_gt(det)
        if "segm" not in self.iou_types:  # skip encoding masks nobody will score
            dets_list = [{k: v for k, v in det.items() if k != "masks"} for det in dets_list]
        bbox_results, mask_results = detections_to_coco(dets_list, self.clsid2catid)
        if "bbox" in self.iou_types:
            self.results["bbox"].extend(bbox_results)
        if "segm" in self.iou_types:
            self.results["segm"].extend(mask_results)

    def accumulate(self):
        """Write the result JSONs, score them with pycocotools, write ``metrics.json``; return the metrics."""
        for iou_type in self.iou_types:
            write_json_atomic(os.path.join(self.output_eval, RESULT_FILES[iou_type]), self.results[iou_type])
            logger.info("%d %s results written to %s", len(self.results[iou_type]), iou_type, self.output_eval)
        # loadRes adds keys to the dicts it gets; evaluate copies so update() can continue afterwards.
        results_by_type = {t: [dict(r) for r in self.results[t]] for t in self.iou_types}
        self.metrics = _evaluate_all(self.gt, results_by_type, self.classwise)
        write_json_atomic(os.path.join(self.output_eval, "metrics.json"), self.metrics, indent=2)
        return self.metrics

    def get_results(self):
        """The metrics of the last ``accumulate`` call."""
        return self.metrics

    def format_table(self):
        return format_metrics(self.metrics)

    def log(self):
        """Print the metrics table (percent, 1 decimal) to stdout."""
        print(self.format_table(), flush=True)


def _read_results(path, kind):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{kind} result file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as err:
            raise ResultsFileError(f"{kind} result file {path} is not valid JSON: {err}") from None
    if not isinstance(results, list):
        raise ResultsFileError(f"{kind} result file {path} must hold a JSON list, got {type(results).__name__}")
    return results


def json_eval(anno_path, bbox_json=None, mask_json=None, output_eval=None, classwise=False):
    """Score existing ``bbox.json``/``mask.json`` files without running the model.

    Returns the same dict as ``COCOMetric.accumulate``; writes ``metrics.json`` into ``output_eval``
    only when that directory is given.
    """
    if bbox_json is None and mask_json is None:
        raise ValueError("json_eval needs bbox_json and/or mask_json")
    results_by_type = {}
    if bbox_json is not None:
        results_by_type["bbox"] = _read_results(bbox_json, "bbox")
    if mask_json is not None:
        results_by_type["segm"] = _read_results(mask_json, "mask")
    gt = load_ground_truth(anno_path, iou_types=tuple(results_by_type))
    metrics = _evaluate_all(gt, results_by_type, classwise)
    if output_eval is not None:
        write_json_atomic(os.path.join(output_eval, "metrics.json"), metrics, indent=2)
    return metrics


def gt_to_results(anno_path):
    """Ground truth as perfect ``(bbox_results, mask_results)`` (score 1.0), for sanity checks.

    Crowd annotations are skipped (COCOeval ignores crowd regions, so they are not objects to
    detect); annotations without a segmentation give no mask result.
    """
    gt = load_ground_truth(anno_path)
    coco_gt, coco_segm = gt.coco("bbox"), gt.coco("segm")
    bbox_results, mask_results = [], []
    for ann_id in sorted(coco_gt.anns):
        ann = coco_gt.anns[ann_id]
        if ann.get("iscrowd", 0):
            continue
        common = {"image_id": ann["image_id"], "category_id": ann["category_id"]}
        bbox_results.append({**common, "bbox": [float(v) for v in ann["bbox"]], "score": 1.0})
        if ann_id in coco_segm.anns:
            rle = coco_segm.annToRLE(coco_segm.anns[ann_id])
            counts = rle["counts"]
            rle = {"size": [int(s) for s in rle["size"]],
                   "counts": counts.decode("utf-8") if isinstance(counts, bytes) else counts}
            mask_results.append({**common, "segmentation": rle, "score": 1.0})
    return bbox_results, mask_results
