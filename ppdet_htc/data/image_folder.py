"""Images to run inference on (PaddleDetection's ``ImageFolder``), with labels from an annotation file.

``anno_path`` only provides the label -> category id/name maps: a COCO JSON (its ``categories``, in
file order like ``COCODataSet``) or a text file with one class name per line (category id = label).
"""
import copy
import json
import os
from typing import Union

import numpy as np

from ..core import serializable
from ..errors import AnnotationError, ConfigError, UsageError
from .coco import resolve_path

__all__ = ["ImageFolder", "IMAGE_EXTENSIONS", "list_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(paths):
    """Expand files and folders (sorted images with ``IMAGE_EXTENSIONS``) into a list of image paths."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    images = []
    for p in paths:
        p = os.path.expanduser(str(p))
        if os.path.isdir(p):
            found = sorted(
                os.path.join(p, f) for f in os.listdir(p)
                if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(p, f)))
            if not found:
                raise FileNotFoundError("no image ({}) in folder {}".format("/".join(IMAGE_EXTENSIONS), p))
            images.extend(found)
        elif os.path.isfile(p):
            if not p.lower().endswith(IMAGE_EXTENSIONS):
                raise UsageError("{} is not an image file (expected {})".format(p, " / ".join(IMAGE_EXTENSIONS)))
            images.append(p)
        else:
            raise FileNotFoundError("image path not found: {}".format(p))
    return [os.path.abspath(p) for p in images]


@serializable
class ImageFolder(object):
    """Records ``{im_file, im_id}`` for a list of images; ``im_id`` is the running index.

    Args:
        dataset_dir: root that relative ``image_dir`` and ``anno_path`` are joined to.
        image_dir: a folder, an image, or a list of them (optional; ``set_images`` replaces it).
        anno_path: COCO JSON or label-list text file giving the class names (optional).
        sample_num: keep only the first ``sample_num`` images (``-1``: all).
    """

    def __init__(
        self,
        dataset_dir: str = None,
        image_dir: Union[str, list] = None,
        anno_path: str = None,
        sample_num: int = -1,
    ):
        self.dataset_dir = dataset_dir
        self.image_dir = image_dir
        self.anno_path = anno_path
        self.sample_num = int(sample_num)
        self._records = None
        self._labels = None  # (category ids, names) in label order

    # ------------------------------------------------------------------ images

    def set_images(self, images):
        """Use these images (files or folders, paths as given) and rebuild the records."""
        self._records = self._make_records(list_images(images))

    def parse_dataset(self):
        if self.image_dir is None:
            raise ConfigError("ImageFolder has no images: set ImageFolder.image_dir or call set_images([...])")
        dirs = self.image_dir if isinstance(self.image_dir, (list, tuple)) else [self.image_dir]
        self._records = self._make_records(list_images([resolve_path(self.dataset_dir, d) for d in dirs]))

    def _make_records(self, paths):
        if self.sample_num > 0:
            paths = paths[: self.sample_num]
        if not paths:
            raise FileNotFoundError("ImageFolder: no image given")
        return [{"im_file": p, "im_id": np.array([i], dtype=np.int64)} for i, p in enumerate(paths)]

    def _ensure_parsed(self):
        if self._records is None:
            self.parse_dataset()

    @property
    def roidbs(self):
        self._ensure_parsed()
        return self._records

    def __len__(self):
        self._ensure_parsed()
        return len(self._records)

    def __getitem__(self, index):
        self._ensure_parsed()
        return copy.deepcopy(self._records[index])

    def get_imid2path(self):
        self._ensure_parsed()
        return {int(r["im_id"][0]): r["im_file"] for r in self._records}

    def check_files(self, max_report: int = 10):
        self._ensure_parsed()
        missing = [r["im_file"] for r in self._records if not os.path.isfile(r["im_file"])]
        if missing:
            raise FileNotFoundError("{} images are missing: {}{}".format(
                len(missing), ", ".join(missing[:max_report]),
                " and {} more".format(len(missing) - max_report) if len(missing) > max_report else ""))

    # ------------------------------------------------------------------ labels

    def get_anno(self):
        if self.anno_path is None:
            return None
        return resolve_path(self.dataset_dir, self.anno_path)

    def _load_labels(self):
        if self._labels is not None:
            return self._labels
        path = self.get_anno()
        if path is None:
            raise ConfigError("ImageFolder.anno_path is not set: it must name a COCO JSON or a label-list .txt "
                             "to map labels to class names and category ids")
        if not os.path.isfile(path):
            raise FileNotFoundError("label file not found: {} (ImageFolder.anno_path={!r}, dataset_dir={!r})".format(
                path, self.anno_path, self.dataset_dir))
        if path.lower().endswith(".json"):
            self._labels = _labels_from_coco(path)
        elif path.lower().endswith(".txt"):
            self._labels = _labels_from_txt(path)
        else:
            raise ConfigError("ImageFolder.anno_path {} must be a COCO .json or a .txt with one class name per "
                             "line".format(path))
        return self._labels

    def get_label_list(self):
        return list(self._load_labels()[1])

    def label_map(self):
        """``(category ids, names)`` in label order from ``anno_path`` (COCO JSON or label list)."""
        ids, names = self._load_labels()
        return list(ids), list(names)

    def image_ids_by_file(self):
        """``{file_name: image id}`` when ``anno_path`` is a COCO JSON with ``images``; else empty."""
        path = self.get_anno()
        if path is None or not path.lower().endswith(".json") or not os.path.isfile(path):
            return {}
        with open(path, "rb") as f:
            data = json.loads(f.read())
        images = data.get("images") if isinstance(data, dict) else None
        return {str(im["file_name"]): int(im["id"]) for im in images or []
                if isinstance(im, dict) and "file_name" in im and "id" in im}

    @property
    def catid2clsid(self):
        return {cid: i for i, cid in enumerate(self._load_labels()[0])}

    @property
    def clsid2catid(self):
        return {i: cid for i, cid in enumerate(self._load_labels()[0])}

    @property
    def cname2cid(self):
        return {name: i for i, name in enumerate(self._load_labels()[1])}

    @property
    def num_classes(self):
        return len(self._load_labels()[0])

    def __repr__(self):
        return "ImageFolder(image_dir={!r}, anno_path={!r}, dataset_dir={!r})".format(
            self.image_dir, self.anno_path, self.dataset_dir)


def _labels_from_coco(path):
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (ValueError, UnicodeDecodeError) as e:
        raise AnnotationError("{}: invalid JSON: {}".format(path, e)) from None
    cats = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(cats, list) or not cats:
        raise AnnotationError("{}: needs a non-empty 'categories' list to name the classes".format(path))
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise AnnotationError("{}: categories[{}] must have 'id' and 'name', got {!r}".format(path, i, c))
    return [c["id"] for c in cats], [c["name"] for c in cats]


def _labels_from_txt(path):
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise AnnotationError("{}: label list is empty (expected one class name per line)".format(path))
    return list(range(len(names))), names
