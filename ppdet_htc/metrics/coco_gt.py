"""Ground truth for pycocotools under the dataset loader's policy, read before any inference runs.

pycocotools trusts its input: an empty polygon list, a polygon of fewer than 3 points, an odd-length
coordinate list, an annotation without ``bbox``/``area``/``iscrowd``/``id`` or an image without
``height``/``width`` make ``COCOeval`` raise, but only at the very end, after the whole inference pass.
The dataset loader (``data/coco.py``) reads such files fine: it drops the degenerate parts and counts them.
Here the same policy is applied to the ground truth handed to ``COCOeval``:

* dropped (and counted in the log): annotations without a box, with an all-zero box, or with
  ``area <= 0`` / width or height <= 1e-5 (as the loader); polygons with fewer than 3 points or an odd
  number of coordinates; for mask evaluation, annotations with no usable segmentation left;
* filled in: missing ``area`` (box area, as the loader), missing ``iscrowd`` (0), missing or duplicate
  annotation ``id`` (fresh ids), missing image ``height``/``width`` (read from the image file when the
  image folder is known);
* :class:`AnnotationError` before inference: anything that cannot be read at all (invalid JSON, wrong
  structure, non-integer ids, references to unknown images/categories, non-numeric coordinates, an RLE
  whose size differs from its image).

Valid ground truth passes unchanged, so the metrics equal plain pycocotools' on it.
"""
import collections
import contextlib
import copy
import io
import json
import logging
import math
import numbers
import os

from pycocotools.coco import COCO

from ..data.coco import _BBOX_EPS, _clean_bbox, _group_annotations, _parse_categories, _parse_images, resolve_path
from ..errors import AnnotationError

__all__ = ["GroundTruth", "load_ground_truth"]

logger = logging.getLogger(__name__)


class GroundTruth(object):
    """The sanitised ground truth: ``coco('bbox')`` / ``coco('segm')`` give pycocotools ``COCO`` objects."""

    def __init__(self, anno_path, dataset_by_type, stats):
        self.anno_path = anno_path
        self.stats = stats
        self._cocos = {}
        for iou_type, data in dataset_by_type.items():
            coco = COCO()
            coco.dataset = data
            with contextlib.redirect_stdout(io.StringIO()):  # "creating index..." chatter
                coco.createIndex()
            self._cocos[iou_type] = coco

    def coco(self, iou_type):
        return self._cocos[iou_type]


def _read_json(path):
    if not os.path.isfile(path):
        raise FileNotFoundError("COCO annotation file not found: {}".format(path))
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (ValueError, UnicodeDecodeError) as e:
        raise AnnotationError("{}: invalid JSON: {}".format(path, e)) from None
    if not isinstance(data, dict):
        raise AnnotationError("{}: expected a JSON object with 'images', 'annotations' and 'categories', got {}".format(
            path, type(data).__name__))
    return data


def _require_int_ids(items, what, anno):
    for item in items:
        if not isinstance(item["id"], numbers.Integral) or isinstance(item["id"], bool):
            raise AnnotationError("{}: {} id {!r} must be an integer".format(anno, what, item["id"]))


def _number(value, where, what):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise AnnotationError("{}: {} must be a finite number, got {!r}".format(where, what, value))
    return value


def _image_size(img, image_root, anno, stats):
    """``(h, w)`` of an image entry; read from the image file when the entry lacks it."""
    try:
        h, w = int(img.get("height") or 0), int(img.get("width") or 0)
    except (TypeError, ValueError):
        raise AnnotationError("{}: image id {}: height/width must be integers, got {!r}/{!r}".format(
            anno, img["id"], img.get("height"), img.get("width"))) from None
    if h > 0 and w > 0:
        return h, w
    path = resolve_path(image_root, img["file_name"]) if image_root else None
    if path and os.path.isfile(path):
        import cv2

        im = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if im is not None:
            stats["image: missing height/width read from the image file"] += 1
            return int(im.shape[0]), int(im.shape[1])
    raise AnnotationError("{}: image id {} ({}) has no valid height/width, needed to evaluate its polygon masks, and "
                          "its image file cannot be read to get them; add them to the annotation file".format(
                              anno, img["id"], img["file_name"]))


def _clean_segmentation(ann, img, anno, stats, size_of):
    """The segmentation COCOeval can use, or None (no usable mask); raises on unreadable ones."""
    segm = ann.get("segmentation")
    where = "{}: annotation id {} (image_id {})".format(anno, ann.get("id"), img["id"])
    if segm is None:
        stats["mask: no segmentation"] += 1
        return None
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise AnnotationError("{}: RLE segmentation needs 'counts' and 'size', got keys {}".format(where, sorted(segm)))
        try:
            size = [int(v) for v in segm["size"]]
        except (TypeError, ValueError):
            raise AnnotationError("{}: RLE 'size' must be [height, width], got {!r}".format(where, segm["size"])) from None
        h, w = size_of(img)
        if size != [h, w]:
            raise AnnotationError("{}: RLE size {} differs from the image size [{}, {}]".format(where, size, h, w))
        return segm
    if not isinstance(segm, list):
        raise AnnotationError("{}: 'segmentation' must be a list of polygons or an RLE dict, got {}".format(
            where, type(segm).__name__))
    polys = []
    for poly in segm:
        if not isinstance(poly, (list, tuple)):
            raise AnnotationError("{}: polygon segmentation must be a list of [x0, y0, x1, y1, ...] lists, got an "
                                  "element {!r}".format(where, poly))
        for v in poly:
            _number(v, where, "a polygon coordinate")
        if len(poly) >= 6 and len(poly) % 2 == 0:  # the loader's rule (data/coco.py)
            polys.append([float(v) for v in poly])
        else:
            stats["mask: polygon part with < 3 points or an odd number of coordinates dropped"] += 1
    if not polys:
        stats["mask: annotation without a usable polygon (not used for mask AP)"] += 1
        return None
    size_of(img)  # pycocotools needs the image size to rasterise polygons
    return polys


def load_ground_truth(anno_path, image_root=None, iou_types=("bbox", "segm")):
    """Read ``anno_path`` and return a :class:`GroundTruth` for ``iou_types`` (see the module doc)."""
    data = _read_json(anno_path)
    cats = _parse_categories(data, anno_path)
    _require_int_ids(cats, "category", anno_path)
    images = _parse_images(data, anno_path)
    _require_int_ids(images.values(), "image", anno_path)
    catid2clsid = {c["id"]: i for i, c in enumerate(cats)}
    by_image = _group_annotations(data, anno_path, images, catid2clsid) if "annotations" in data else {}

    stats = collections.Counter()
    sizes = {}

    def size_of(img):
        if img["id"] not in sizes:
            sizes[img["id"]] = _image_size(img, image_root, anno_path, stats)
        return sizes[img["id"]]

    used_ids = set()
    int_ids = [a["id"] for anns in by_image.values() for a in anns
               if isinstance(a.get("id"), numbers.Integral) and not isinstance(a.get("id"), bool)]
    next_id = max(int_ids, default=0) + 1
    kept = {t: [] for t in iou_types}
    for img_id in images:
        img = images[img_id]
        for ann in by_image.get(img_id, []):
            ann = dict(ann)
            ann_id = ann.get("id")
            if not isinstance(ann_id, numbers.Integral) or isinstance(ann_id, bool) or ann_id in used_ids:
                stats["annotation: missing or duplicate id renumbered"] += 1
                ann["id"], next_id = next_id, next_id + 1
            used_ids.add(ann["id"])
            crowd = ann.get("iscrowd", 0)
            if crowd not in (0, 1, True, False):
                raise AnnotationError("{}: annotation id {}: 'iscrowd' must be 0 or 1, got {!r}".format(
                    anno_path, ann["id"], crowd))
            if "iscrowd" not in ann:
                stats["annotation: missing iscrowd set to 0"] += 1
            ann["iscrowd"] = int(crowd)
            box = _clean_bbox(ann, img, anno_path)
            if box is None:
                stats["annotation: missing or all-zero bbox dropped"] += 1
                continue
            w, h = box[2] - box[0], box[3] - box[1]
            if "area" in ann:
                area = _number(ann["area"], "{}: annotation id {}".format(anno_path, ann["id"]), "'area'")
            else:
                area = w * h
                stats["annotation: missing area set to the box area"] += 1
            if not (area > 0 and w > _BBOX_EPS and h > _BBOX_EPS):
                stats["annotation: area <= 0 or width/height <= 1e-5 dropped"] += 1
                continue
            ann["area"] = float(area)
            ann["bbox"] = [float(v) for v in ann["bbox"]]
            if "bbox" in kept:
                kept["bbox"].append({k: v for k, v in ann.items() if k != "segmentation"})
            if "segm" in kept:
                segm = _clean_segmentation(ann, img, anno_path, stats, size_of)
                if segm is not None:
                    kept["segm"].append(dict(ann, segmentation=segm))
    image_list = []
    for img_id in images:
        img = dict(images[img_id])
        if img_id in sizes:
            img["height"], img["width"] = sizes[img_id]
        image_list.append(img)
    if stats:
        logger.info("%s: ground truth prepared for COCOeval as the dataset loader reads it: %s", anno_path,
                    ", ".join("{} {}".format(v, k) for k, v in sorted(stats.items())))
    base = {"images": image_list, "categories": copy.deepcopy(cats)}
    for key in ("info", "licenses"):
        if key in data:
            base[key] = data[key]
    datasets = {t: dict(base, annotations=anns) for t, anns in kept.items()}
    return GroundTruth(anno_path, datasets, stats)
