"""Semantic label maps derived from instance annotations (for the HTC semantic branch without COCO-stuff).

Label convention: 0 = background, ``c + 1`` = thing class ``c`` (contiguous label), 255 = ignored.
Ignored pixels are crowd regions and pixels claimed by objects of two different classes: we cannot
tell which class is right there, so the loss should not push either way.
"""
import numpy as np

from ..errors import AnnotationError, ConfigError
from .transforms import segm_to_bitmap

__all__ = ["semantic_from_instances", "IGNORE_LABEL"]

IGNORE_LABEL = 255


def semantic_from_instances(sample, h, w):
    """``uint8 [h, w]`` label map from ``gt_poly`` (polygons or RLE), ``gt_class`` and ``is_crowd``.

    Objects are painted in annotation order (later ones over earlier ones); a pixel covered by two
    different classes becomes 255, as does every crowd region (``is_crowd == 1`` objects and the
    optional ``semantic_crowd_poly`` list of crowd segmentations that were not loaded as objects).
    """
    where = sample.get("im_file", "<sample>")
    polys = sample.get("gt_poly")
    classes = sample.get("gt_class")
    if polys is None or classes is None:
        raise ConfigError("semantic_from_instances: {} needs 'gt_poly' and 'gt_class' (add them to the "
                         "dataset's data_fields)".format(where))
    classes = np.asarray(classes).reshape(-1)
    crowd = sample.get("is_crowd")
    crowd = np.zeros(len(classes), np.int32) if crowd is None else np.asarray(crowd).reshape(-1)
    if not len(polys) == len(classes) == len(crowd):
        raise ValueError("semantic_from_instances: {} has {} gt_poly, {} gt_class and {} is_crowd entries".format(
            where, len(polys), len(classes), len(crowd)))

    label = np.zeros((h, w), np.uint8)
    ambiguous = np.zeros((h, w), bool)
    ignore = np.zeros((h, w), bool)
    for segm, cls, is_crowd in zip(polys, classes, crowd):
        mask = _bitmap(segm, h, w, where)
        if is_crowd:
            ignore |= mask
            continue
        value = int(cls) + 1
        if not 1 <= value < IGNORE_LABEL:
            raise ConfigError("semantic_from_instances: {}: class {} does not fit a uint8 label map "
                             "(labels 0..253 are supported)".format(where, int(cls)))
        ambiguous |= mask & (label != 0) & (label != value)
        label[mask] = value
    for segm in sample.get("semantic_crowd_poly") or []:
        ignore |= _bitmap(segm, h, w, where)
    label[ambiguous | ignore] = IGNORE_LABEL
    return label


def _bitmap(segm, h, w, where):
    mask = segm_to_bitmap(segm, h, w)
    if mask.shape != (h, w):
        raise AnnotationError("semantic_from_instances: {}: a mask is {}x{} but the image is {}x{}".format(
            where, mask.shape[0], mask.shape[1], h, w))
    return mask.astype(bool)
