"""COCO-format instance datasets (PaddleDetection's ``COCODataSet``): JSON -> one record per image.

Parsing follows the reference (see ``data/README.md`` for the record keys): image ids ascending,
labels in ``categories`` file order (``pycocotools``' ``getCatIds()``), ``[x,y,w,h]`` -> ``[x1,y1,x2,y2]``
rounded to 3 decimals, invalid/ignored/crowd annotations dropped, images without a usable annotation
skipped. Unlike the reference, malformed files raise errors naming the file and the offending
annotation instead of failing later in a worker, and every skip is counted in the log.
"""
import collections
import copy
import json
import logging
import os

import numpy as np
import pycocotools.mask as mask_util

from ..core import serializable
from ..errors import AnnotationError, ConfigError
from ..core.registry import closest

__all__ = ["COCODataSet", "AnnotationError", "VALID_DATA_FIELDS", "resolve_path"]

logger = logging.getLogger(__name__)

VALID_DATA_FIELDS = ("image", "gt_bbox", "gt_class", "gt_poly", "is_crowd", "semantic")
_GT_FIELDS = ("gt_bbox", "gt_class", "gt_poly", "is_crowd")
_SEMANTIC_SOURCES = ("stuffthingmaps", "instances")
_BBOX_EPS = 1e-5


def resolve_path(root, path):
    """``path`` joined to ``root`` when relative (PaddleDetection's ``dataset_dir`` convention)."""
    if path is None:
        return root
    path = os.path.expanduser(str(path))
    if os.path.isabs(path) or not root:
        return path
    return os.path.join(os.path.expanduser(str(root)), path)


@serializable
class COCODataSet(object):
    """Records of a COCO instance-annotation file, parsed on first use.

    Args (PaddleDetection's, plus the semantic options):
        dataset_dir: root that relative ``image_dir``/``anno_path``/``semantic_dir`` are joined to.
        image_dir: folder holding the images named by ``file_name``.
        anno_path: the COCO JSON file.
        data_fields: record keys to fill, from ``image, gt_bbox, gt_class, gt_poly, is_crowd, semantic``.
        sample_num: keep only the first ``sample_num`` images (``-1``: all).
        load_crowd: keep ``iscrowd`` annotations (``is_crowd = 1``); otherwise they are skipped.
        allow_empty: keep images without usable annotations (subsampled by ``empty_ratio``).
        empty_ratio: wanted fraction of empty images among all records; outside ``[0, 1)`` keeps all.
        repeat: the record list is repeated this many times per epoch.
        load_semantic: add a semantic label map to each record.
        semantic_source: ``'stuffthingmaps'`` (PNG per image under ``semantic_dir``) or ``'instances'``
            (derived from the instance masks by ``data/semantic.py``).
        semantic_dir: folder of the label PNGs ``<image file stem>.png``.
    """

    def __init__(
        self,
        dataset_dir: str = None,
        image_dir: str = None,
        anno_path: str = None,
        data_fields: list = ["image"],  # noqa: B006 (copied below; PaddleDetection's signature)
        sample_num: int = -1,
        load_crowd: bool = False,
        allow_empty: bool = False,
        empty_ratio: float = 1.0,
        repeat: int = 1,
        load_semantic: bool = False,
        semantic_source: str = "stuffthingmaps",
        semantic_dir: str = "stuffthingmaps/train2017",
    ):
        self.dataset_dir = dataset_dir
        self.image_dir = image_dir
        self.anno_path = anno_path
        self.data_fields = list(data_fields) if data_fields is not None else ["image"]
        for field in self.data_fields:
            if field not in VALID_DATA_FIELDS:
                hint = closest(str(field), VALID_DATA_FIELDS)
                raise ConfigError(
                    "COCODataSet.data_fields: unknown field {!r}{}; valid fields: {}".format(
                        field, "; did you mean {}?".format(" / ".join(repr(h) for h in hint)) if hint else "",
                        ", ".join(VALID_DATA_FIELDS)))
        if int(repeat) < 1:
            raise ConfigError("COCODataSet.repeat must be >= 1, got {!r}".format(repeat))
        if semantic_source not in _SEMANTIC_SOURCES:
            raise ConfigError("COCODataSet.semantic_source must be one of {}, got {!r}".format(
                " / ".join(repr(s) for s in _SEMANTIC_SOURCES), semantic_source))
        if load_semantic and semantic_source == "instances":
            missing = [f for f in ("gt_class", "gt_poly") if f not in self.data_fields]
            if missing:
                raise ConfigError(
                    "COCODataSet: semantic_source 'instances' derives the label map from the instance masks, "
                    "so data_fields must contain {} (got {})".format(missing, self.data_fields))
        if "semantic" in self.data_fields and not load_semantic:
            logger.warning("COCODataSet: 'semantic' is in data_fields but load_semantic is false; "
                           "no semantic label map will be loaded (set load_semantic: true)")
        self.sample_num = int(sample_num)
        self.load_crowd = bool(load_crowd)
        self.allow_empty = bool(allow_empty)
        self.empty_ratio = float(empty_ratio)
        self.repeat = int(repeat)
        self.load_semantic = bool(load_semantic)
        self.semantic_source = semantic_source
        self.semantic_dir = semantic_dir
        self._records = None
        self._catid2clsid = None
        self._cat_names = None

    # ------------------------------------------------------------------ paths and lazy parsing

    def get_anno(self):
        """Full path of the annotation file (``None`` when ``anno_path`` is unset)."""
        if self.anno_path is None:
            return None
        return resolve_path(self.dataset_dir, self.anno_path)

    def get_image_root(self):
        return resolve_path(self.dataset_dir, self.image_dir) or ""

    def _ensure_parsed(self):
        if self._records is None:
            self.parse_dataset()

    def parse_dataset(self):
        """Read the annotation file and build the records (called on first use)."""
        anno = self.get_anno()
        if anno is None:
            raise ConfigError("COCODataSet.anno_path is not set (dataset_dir={!r}, image_dir={!r})".format(
                self.dataset_dir, self.image_dir))
        data = _load_json(anno, self)
        image_root = self.get_image_root()
        if image_root and not os.path.isdir(image_root):
            raise FileNotFoundError("image directory not found: {} (COCODataSet.image_dir={!r}, dataset_dir={!r}; "
                                    "annotations: {})".format(image_root, self.image_dir, self.dataset_dir, anno))
        cats = _parse_categories(data, anno)
        self._catid2clsid = {c["id"]: i for i, c in enumerate(cats)}
        self._cat_names = [c["name"] for c in cats]
        images = _parse_images(data, anno)
        if "annotations" in data:
            anns_by_image = _group_annotations(data, anno, images, self._catid2clsid)
        else:
            wanted = [f for f in _GT_FIELDS if f in self.data_fields]
            if wanted or (self.load_semantic and self.semantic_source == "instances"):
                raise AnnotationError("{}: has no 'annotations' list, but data_fields asks for {}".format(
                    anno, wanted or "a semantic map"))
            logger.warning("%s: no 'annotations' list; loading the images only", anno)
            anns_by_image = None
        self._records = self._build_records(images, anns_by_image, anno, image_root)

    def _build_records(self, images, anns_by_image, anno, image_root):
        stats = collections.Counter()
        records, empty_records = [], []
        for img_id in sorted(images):
            img = images[img_id]
            h, w = int(img.get("height", 0) or 0), int(img.get("width", 0) or 0)
            if h < 0 or w < 0:
                stats["image: negative width/height"] += 1
                continue
            rec = {
                "im_file": os.path.abspath(os.path.join(image_root, img["file_name"])),
                "im_id": np.array([img_id], dtype=np.int64),
                "h": h,
                "w": w,
            }
            empty = False
            if anns_by_image is not None:
                anns = anns_by_image.get(img_id, [])
                kept, crowd_segms = self._select_annotations(anns, img, anno, stats)
                if not kept:
                    if not anns:
                        stats["image: no annotation"] += 1
                    else:
                        stats["image: no usable annotation (all crowd/ignored/invalid)"] += 1
                    if not self.allow_empty:
                        continue
                    empty = True
                rec.update(self._gt_fields(kept))
                if self.load_semantic:
                    rec.update(self._semantic_fields(img, crowd_segms))
            elif self.load_semantic:
                rec.update(self._semantic_fields(img, []))
            (empty_records if empty else records).append(rec)
            if 0 < self.sample_num <= len(records) + len(empty_records):
                break
        if self.allow_empty and empty_records:
            empty_records = _sample_empty(empty_records, len(records), self.empty_ratio)
        all_records = records + empty_records
        self._log_stats(anno, len(images), len(all_records), len(empty_records), stats)
        if not all_records:
            raise AnnotationError("{}: no usable image ({} images in the file; {})".format(
                anno, len(images), _format_stats(stats) or "no images listed"))
        return all_records

    def _select_annotations(self, anns, img, anno, stats):
        """Apply the reference's filters; return the kept annotations and the crowd segmentations."""
        kept, crowd_segms = [], []
        need_segm = "gt_poly" in self.data_fields
        for ann in anns:
            crowd = int(ann.get("iscrowd", 0) or 0) == 1
            if crowd and self.load_semantic and self.semantic_source == "instances" and ann.get("segmentation"):
                segm = _parse_segmentation(ann, img, anno)
                if segm is not None:
                    crowd_segms.append(segm)
            if crowd and not self.load_crowd:
                stats["annotation: crowd (load_crowd is false)"] += 1
                continue
            if ann.get("ignore", False):
                stats["annotation: ignore flag"] += 1
                continue
            box = _clean_bbox(ann, img, anno)
            if box is None:
                stats["annotation: missing or all-zero bbox"] += 1
                continue
            area = ann.get("area", (box[2] - box[0]) * (box[3] - box[1]))
            if not isinstance(area, (int, float)) or isinstance(area, bool):
                raise AnnotationError("{}: annotation id {} (image_id {}): 'area' must be a number, got {!r}".format(
                    anno, ann.get("id"), img["id"], area))
            if not (area > 0 and box[2] - box[0] > _BBOX_EPS and box[3] - box[1] > _BBOX_EPS):
                stats["annotation: area <= 0 or width/height <= 1e-5"] += 1
                continue
            segm = None
            if need_segm:
                if "segmentation" not in ann:
                    raise AnnotationError(
                        "{}: annotation id {} (image_id {}) has no 'segmentation', but data_fields contains "
                        "'gt_poly'".format(anno, ann.get("id"), ann.get("image_id")))
                segm = _parse_segmentation(ann, img, anno)
                if segm is None:
                    stats["annotation: empty or degenerate polygon segmentation"] += 1
                    continue
            kept.append((ann, [round(float(x), 3) for x in box], segm, crowd))
        return kept, crowd_segms

    def _gt_fields(self, kept):
        n = len(kept)
        gt = {
            "gt_bbox": np.array([k[1] for k in kept], dtype=np.float32).reshape(n, 4),
            "gt_class": np.array([self._catid2clsid[k[0]["category_id"]] for k in kept], dtype=np.int32).reshape(n, 1),
            "is_crowd": np.array([1 if k[3] else 0 for k in kept], dtype=np.int32).reshape(n, 1),
            "gt_poly": [k[2] for k in kept],
        }
        return {k: v for k, v in gt.items() if k in self.data_fields}

    def _semantic_fields(self, img, crowd_segms):
        if self.semantic_source == "instances":
            return {"semantic_from_instances": True, "semantic_crowd_poly": crowd_segms}
        stem = os.path.splitext(img["file_name"])[0]
        sem_root = resolve_path(self.dataset_dir, self.semantic_dir) or ""
        return {"semantic_file": os.path.abspath(os.path.join(sem_root, stem + ".png"))}

    @staticmethod
    def _log_stats(anno, n_images, n_records, n_empty, stats):
        skipped = {k: v for k, v in stats.items() if k.startswith("image:")}
        logger.info("%s: %d of %d images used (%d without annotations kept)%s", anno, n_records, n_images, n_empty,
                    "; skipped: " + _format_stats(skipped) if skipped else "")
        dropped = {k: v for k, v in stats.items() if k.startswith("annotation:")}
        if dropped:
            logger.info("%s: annotations not used: %s", anno, _format_stats(dropped))

    # ------------------------------------------------------------------ dataset protocol

    @property
    def roidbs(self):
        """The parsed records (PaddleDetection's name), without ``repeat``."""
        self._ensure_parsed()
        return self._records

    def __len__(self):
        self._ensure_parsed()
        return len(self._records) * self.repeat

    def __getitem__(self, index):
        """A private copy of record ``index`` (``index`` counts over the repeated list)."""
        self._ensure_parsed()
        n = len(self._records)
        if not -n * self.repeat <= index < n * self.repeat:
            raise IndexError("COCODataSet index {} out of range ({} records x repeat {})".format(
                index, n, self.repeat))
        return copy.deepcopy(self._records[index % n])

    @property
    def catid2clsid(self):
        """COCO category id -> contiguous label (file order of ``categories``)."""
        self._ensure_parsed()
        return dict(self._catid2clsid)

    @property
    def clsid2catid(self):
        self._ensure_parsed()
        return {v: k for k, v in self._catid2clsid.items()}

    @property
    def cname2cid(self):
        self._ensure_parsed()
        return {name: i for i, name in enumerate(self._cat_names)}

    @property
    def num_classes(self):
        self._ensure_parsed()
        return len(self._cat_names)

    def get_label_list(self):
        """Category names in label order."""
        self._ensure_parsed()
        return list(self._cat_names)

    def get_imid2path(self):
        self._ensure_parsed()
        return {int(r["im_id"][0]): r["im_file"] for r in self._records}

    def label_map(self):
        """``(category ids, names)`` in label order from the file's ``categories`` only: inference can name
        its classes without parsing annotations or touching images."""
        if self._records is not None:
            ids = sorted(self._catid2clsid, key=self._catid2clsid.get)
            return ids, list(self._cat_names)
        anno = self.get_anno()
        if anno is None:
            raise ConfigError("COCODataSet.anno_path is not set")
        cats = _parse_categories(_load_json(anno, self), anno)
        return [c["id"] for c in cats], [c["name"] for c in cats]

    def image_ids_by_file(self):
        """``{file_name: image id}`` of the annotation file's ``images`` (for naming inference results)."""
        anno = self.get_anno()
        if anno is None:
            raise ConfigError("COCODataSet.anno_path is not set")
        return {str(im["file_name"]): int(im["id"]) for im in _parse_images(_load_json(anno, self), anno).values()}

    def check_files(self, max_report: int = 10):
        """Raise ``FileNotFoundError`` listing the first missing image (and semantic) files."""
        self._ensure_parsed()
        missing = []
        for r in self._records:
            for key in ("im_file", "semantic_file"):
                if key in r and not os.path.isfile(r[key]):
                    missing.append(r[key])
        if missing:
            raise FileNotFoundError("{} of the files listed by {} are missing: {}{} (check dataset_dir={!r} and "
                                    "image_dir={!r})".format(
                                        len(missing), self.get_anno(), ", ".join(missing[:max_report]),
                                        " and {} more".format(len(missing) - max_report)
                                        if len(missing) > max_report else "", self.dataset_dir, self.image_dir))

    def __repr__(self):
        return "COCODataSet(anno_path={!r}, image_dir={!r}, dataset_dir={!r}, data_fields={})".format(
            self.anno_path, self.image_dir, self.dataset_dir, self.data_fields)


# ---------------------------------------------------------------------------------------- parsing helpers


def _load_json(path, owner):
    if not os.path.isfile(path):
        raise FileNotFoundError("COCO annotation file not found: {} (anno_path={!r}, dataset_dir={!r})".format(
            path, owner.anno_path, owner.dataset_dir))
    with open(path, "rb") as f:
        raw = f.read()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise AnnotationError("{}: invalid JSON: {}".format(path, e)) from None
    if not isinstance(data, dict):
        raise AnnotationError("{}: expected a JSON object with 'images', 'annotations' and 'categories', "
                              "got {}".format(path, type(data).__name__))
    return data


def _require_list(data, key, anno):
    value = data.get(key)
    if not isinstance(value, list):
        raise AnnotationError("{}: key {!r} must be a list, got {}".format(
            anno, key, "nothing" if value is None else type(value).__name__))
    return value


def _parse_categories(data, anno):
    cats = _require_list(data, "categories", anno)
    seen = set()
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise AnnotationError("{}: categories[{}] must have 'id' and 'name', got {!r}".format(anno, i, c))
        if c["id"] in seen:
            raise AnnotationError("{}: category id {} appears twice in 'categories'".format(anno, c["id"]))
        seen.add(c["id"])
    return cats


def _parse_images(data, anno):
    images = {}
    for i, img in enumerate(_require_list(data, "images", anno)):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise AnnotationError("{}: images[{}] must have 'id' and 'file_name', got {!r}".format(anno, i, img))
        if not isinstance(img["id"], int) or isinstance(img["id"], bool):
            raise AnnotationError("{}: images[{}]: 'id' must be an integer, got {!r}".format(anno, i, img["id"]))
        if img["id"] in images:
            raise AnnotationError("{}: image id {} appears twice in 'images'".format(anno, img["id"]))
        images[img["id"]] = img
    return images


def _group_annotations(data, anno, images, catid2clsid):
    """Annotations per image id (file order), checking image and category references."""
    by_image = collections.defaultdict(list)
    for i, ann in enumerate(_require_list(data, "annotations", anno)):
        if not isinstance(ann, dict):
            raise AnnotationError("{}: annotations[{}] must be an object, got {!r}".format(anno, i, ann))
        ann_id = ann.get("id", "#{}".format(i))
        for key in ("image_id", "category_id"):
            if key not in ann:
                raise AnnotationError("{}: annotation id {} has no {!r}".format(anno, ann_id, key))
        if ann["image_id"] not in images:
            raise AnnotationError("{}: annotation id {} refers to image_id {}, which is not in 'images'".format(
                anno, ann_id, ann["image_id"]))
        if ann["category_id"] not in catid2clsid:
            raise AnnotationError(
                "{}: annotation id {} (image_id {}) has category_id {}, which is not in 'categories' "
                "(known ids: {})".format(anno, ann_id, ann["image_id"], ann["category_id"],
                                         sorted(catid2clsid)))
        by_image[ann["image_id"]].append(ann)
    return by_image


def _clean_bbox(ann, img, anno):
    """``[x1, y1, x2, y2]`` floats, or ``None`` for a missing/all-zero box (dropped like the reference)."""
    bbox = ann.get("bbox")
    if bbox is None:
        return None
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise AnnotationError("{}: annotation id {} (image_id {}): 'bbox' must be [x, y, w, h], got {!r}".format(
            anno, ann.get("id"), img["id"], bbox))
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise AnnotationError("{}: annotation id {} (image_id {}): 'bbox' must hold numbers, got {!r}".format(
            anno, ann.get("id"), img["id"], bbox)) from None
    if not any((x, y, w, h)):
        return None
    return [x, y, x + w, y + h]


def _parse_segmentation(ann, img, anno):
    """Polygon lists (degenerate polygons removed; ``None`` if none is left) or a compressed RLE dict."""
    segm = ann.get("segmentation")
    where = "{}: annotation id {} (image_id {})".format(anno, ann.get("id"), img["id"])
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise AnnotationError("{}: RLE segmentation needs 'counts' and 'size', got keys {}".format(
                where, sorted(segm)))
        size = [int(v) for v in segm["size"]]
        ih, iw = int(img.get("height", 0) or 0), int(img.get("width", 0) or 0)
        if ih and iw and size != [ih, iw]:
            raise AnnotationError("{}: RLE size {} differs from the image size [{}, {}]".format(where, size, ih, iw))
        if isinstance(segm["counts"], list):
            return mask_util.frPyObjects(segm, size[0], size[1])
        return {"size": size, "counts": segm["counts"]}
    if isinstance(segm, list):
        polys = []
        for poly in segm:
            if not isinstance(poly, (list, tuple)):
                raise AnnotationError("{}: polygon segmentation must be a list of [x0, y0, x1, y1, ...] lists, "
                                      "got an element {!r}".format(where, poly))
            bad = [v for v in poly if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v)]
            if bad:
                raise AnnotationError("{}: polygon coordinates must be finite numbers, got {!r}".format(where, bad[0]))
            if len(poly) >= 6 and len(poly) % 2 == 0:
                polys.append(poly)
        return polys or None
    raise AnnotationError("{}: 'segmentation' must be a list of polygons or an RLE dict, got {}".format(
        where, type(segm).__name__))


def _sample_empty(empty_records, num_non_empty, ratio):
    """Keep ``ratio`` of the final list empty (reference rule), deterministically, in id order."""
    if ratio < 0.0 or ratio >= 1.0:
        return empty_records
    keep = min(int(num_non_empty * ratio / (1.0 - ratio)), len(empty_records))
    picked = np.sort(np.random.default_rng(0).choice(len(empty_records), size=keep, replace=False))
    return [empty_records[i] for i in picked]


def _format_stats(stats):
    return ", ".join("{} {}".format(v, k.split(": ", 1)[-1]) for k, v in sorted(stats.items()))
