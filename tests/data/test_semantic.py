"""semantic_from_instances against hand-computed label maps, and through Decode."""
import os

import cv2
import numpy as np
import pytest

from ppdet_htc.data import semantic_from_instances
from ppdet_htc.data.transforms import Decode

from .coco_factory import rect_poly, rect_rle, write_coco
from .test_coco import ALL_FIELDS, _by_id, _ds


def _rle(y0, y1, x0, x1, h=6, w=8):
    return rect_rle(h, w, y0, y1, x0, x1)


def test_overlaps_crowd_and_classes_hand_computed():
    sample = {
        "im_file": "x.jpg",
        "gt_poly": [
            _rle(0, 3, 0, 4),                # class 0 -> 1
            _rle(1, 4, 2, 6),                # class 1 -> 2, overlaps class 0 at rows 1-2, cols 2-3 -> 255
            rect_poly(4, 3, 7, 5),           # class 1 polygon: rows 3-4, cols 4-6; same class overlap stays 2
            _rle(4, 6, 0, 2),                # class 0 -> 1
            _rle(5, 6, 6, 8),                # crowd -> 255
        ],
        "gt_class": np.array([[0], [1], [1], [0], [2]], np.int32),
        "is_crowd": np.array([[0], [0], [0], [0], [1]], np.int32),
    }
    expected = np.array([
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 255, 255, 2, 2, 0, 0],
        [1, 1, 255, 255, 2, 2, 0, 0],
        [0, 0, 2, 2, 2, 2, 2, 0],
        [1, 1, 0, 0, 2, 2, 2, 0],
        [1, 1, 0, 0, 0, 0, 255, 255],
    ], np.uint8)
    out = semantic_from_instances(sample, 6, 8)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_later_objects_paint_over_but_ambiguity_sticks():
    sample = {
        "gt_poly": [_rle(0, 2, 0, 2), _rle(0, 2, 0, 2), _rle(0, 1, 0, 1)],
        "gt_class": np.array([[3], [5], [3]], np.int32),
        "semantic_crowd_poly": [rect_poly(6, 4, 8, 6)],
    }
    out = semantic_from_instances(sample, 6, 8)
    expected = np.zeros((6, 8), np.uint8)
    expected[0:2, 0:2] = 255  # classes 3 and 5 both claim it
    expected[4:6, 6:8] = 255  # crowd region that was not loaded as an object
    np.testing.assert_array_equal(out, expected)
    same = semantic_from_instances({"gt_poly": [_rle(0, 2, 0, 2), _rle(1, 3, 1, 3)],
                                    "gt_class": np.array([[4], [4]])}, 6, 8)
    assert set(np.unique(same[0:3, 0:3])) == {0, 5}


def test_errors_name_the_image():
    with pytest.raises(ValueError, match="a.jpg.*gt_poly"):
        semantic_from_instances({"im_file": "a.jpg", "gt_class": np.zeros((1, 1))}, 4, 4)
    with pytest.raises(ValueError, match="a.jpg.*10x10"):
        semantic_from_instances({"im_file": "a.jpg", "gt_poly": [rect_rle(10, 10, 0, 1, 0, 1)],
                                 "gt_class": np.zeros((1, 1), np.int32)}, 4, 4)
    with pytest.raises(ValueError, match="class 254"):
        semantic_from_instances({"im_file": "a.jpg", "gt_poly": [_rle(0, 1, 0, 1)],
                                 "gt_class": np.array([[254]])}, 6, 8)


def test_decode_derives_semantic_from_dataset_records(tmp_path):
    paths = write_coco(tmp_path)
    ds = _ds(paths, data_fields=ALL_FIELDS, load_semantic=True, semantic_source="instances")
    rec = _by_id(ds)[2]
    sample = Decode()(dict(rec))
    expected = np.zeros((36, 48), np.uint8)
    expected[6:18, 5:15] = 1  # the RLE object of category 7 (label 0)
    np.testing.assert_array_equal(sample["semantic"], expected)


def test_decode_reads_stuffthingmaps_png(tmp_path):
    paths = write_coco(tmp_path)
    ds = _ds(paths, data_fields=ALL_FIELDS, load_semantic=True)
    rec = _by_id(ds)[1]
    label = (np.arange(24 * 32).reshape(24, 32) % 7).astype(np.uint8)
    os.makedirs(os.path.dirname(rec["semantic_file"]), exist_ok=True)
    cv2.imwrite(rec["semantic_file"], label)
    np.testing.assert_array_equal(Decode()(dict(rec))["semantic"], label)
