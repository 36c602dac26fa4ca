"""Ground truth pycocotools chokes on is evaluated to the end (loader policy); unreadable files stop first."""
import copy
import json
import logging

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ppdet_htc.errors import AnnotationError
from ppdet_htc.metrics import COCOMetric, json_eval
from ppdet_htc.metrics.coco_gt import load_ground_truth
from tests.metrics import conftest
from tests.metrics.test_coco_eval import gt_to_dets

# Each entry: (name, function that breaks a deep copy of the fixture's ground truth in place).
# Every one of them makes plain pycocotools raise during evaluate() (checked below), yet the dataset loader
# reads the file.


def build_gt():
    """A private copy of the fixture's ground truth (its image list is a module-level object)."""
    return copy.deepcopy(conftest.build_gt())


def _ann(gt, ann_id):
    return next(a for a in gt["annotations"] if a["id"] == ann_id)


def _add(gt, **fields):
    ann = {"id": 100 + len(gt["annotations"]), "image_id": 1, "category_id": 1, "iscrowd": 0,
           "bbox": [100.0, 60.0, 20.0, 20.0], "area": 400.0}
    ann.update(fields)
    gt["annotations"].append(ann)
    return ann


DEGENERATE = {  # name: (breaks the ground truth in place, makes plain pycocotools raise)
    "polygon with 2 points": (lambda gt: _add(gt, segmentation=[[100, 60, 120, 80]]), True),
    "polygon with 1 point": (lambda gt: _add(gt, segmentation=[[100, 60]]), True),
    "empty polygon list": (lambda gt: _add(gt, segmentation=[]), True),
    "empty polygon": (lambda gt: _add(gt, segmentation=[[]]), True),
    "odd-length polygon": (lambda gt: _add(gt, segmentation=[[100, 60, 120, 60, 120, 80, 100]]), False),
    "good and degenerate parts": (lambda gt: _add(gt, segmentation=[[100, 60, 120, 60, 120, 80], [1, 2]]), False),
    "no segmentation": (lambda gt: _add(gt), True),
    "null segmentation": (lambda gt: _add(gt, segmentation=None), True),
    "no area": (lambda gt: _ann(gt, 3).pop("area"), True),
    "no iscrowd": (lambda gt: _ann(gt, 3).pop("iscrowd"), True),
    "no bbox": (lambda gt: _add(gt, segmentation=[[100, 60, 120, 60, 120, 80]]).pop("bbox"), True),
    "no id": (lambda gt: _ann(gt, 3).pop("id"), True),
    "no image size": (lambda gt: (gt["images"][2].pop("height"), gt["images"][2].pop("width")), True),
}
FILLED_IN = ("no area", "no iscrowd", "no id", "no image size")  # nothing is lost: metrics as for clean data
# Degenerate but harmless to pycocotools: dropped by the loader's policy all the same.
DROPPED_ONLY = {
    "zero-area box": lambda gt: _add(gt, bbox=[100.0, 60.0, 0.0, 20.0], area=0.0,
                                     segmentation=[[100, 60, 100, 80, 100, 70]]),
    "all-zero box": lambda gt: _add(gt, bbox=[0, 0, 0, 0], segmentation=[[100, 60, 120, 60, 120, 80]]),
    "duplicate id": lambda gt: _add(gt, id=3, bbox=[5.0, 5.0, 25.0, 30.0],
                                    segmentation=[[5, 5, 30, 8, 25, 35, 8, 28]]),
}


def _write(tmp_path, gt, name="gt.json"):
    path = tmp_path / name
    path.write_text(json.dumps(gt))
    return str(path)


def _pycocotools_fails(path):
    try:
        coco = COCO(path)
        for iou_type in ("bbox", "segm"):
            if iou_type == "segm":
                dt = coco.loadRes([{"image_id": 1, "category_id": 1, "score": 0.9,
                                    "segmentation": {"size": [120, 160], "counts": "PQ1"}}])
            else:
                dt = coco.loadRes([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9}])
            ev = COCOeval(coco, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
    except Exception:
        return True
    return False


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_ground_truth_evaluates_to_the_end(tmp_path, case, caplog):
    clean = _write(tmp_path, build_gt(), "clean.json")
    gt = build_gt()
    breaks, chokes = DEGENERATE[case]
    breaks(gt)
    broken = _write(tmp_path, gt)
    assert _pycocotools_fails(broken) == chokes
    images = tmp_path / "images"
    images.mkdir()
    for img in build_gt()["images"]:  # files for the image-size fallback
        cv2.imwrite(str(images / img["file_name"]), np.zeros((img["height"], img["width"], 3), np.uint8))
    dets = gt_to_dets(clean)  # perfect detections of the valid objects
    with caplog.at_level(logging.INFO, logger="ppdet_htc"):
        metric = COCOMetric(broken, output_eval=str(tmp_path / "out"), image_root=str(images))
        segm_gt = copy.deepcopy(metric.gt.coco("segm").dataset["annotations"])  # COCOeval rewrites them
        metric.update(copy.deepcopy(dets))
        metrics = metric.accumulate()
    reference = COCOMetric(clean, output_eval=str(tmp_path / "ref"))
    reference.update(copy.deepcopy(dets))
    expected = reference.accumulate()
    if case in FILLED_IN:
        assert metrics == expected
    elif case == "good and degenerate parts":  # the valid part stays a (missed) object, the other is dropped
        (ann,) = [a for a in segm_gt if a["id"] == gt["annotations"][-1]["id"]]
        assert ann["segmentation"] == [[100.0, 60.0, 120.0, 60.0, 120.0, 80.0]]
        assert metrics["segm"]["AR100"] < expected["segm"]["AR100"]
    else:  # the degenerate object is not used for the mask AP (nor for the box AP without a box)
        assert metrics["segm"] == expected["segm"]
    assert "ground truth prepared for COCOeval" in caplog.text  # the log counts what was dropped/filled


@pytest.mark.parametrize("case", sorted(DROPPED_ONLY))
def test_degenerate_boxes_follow_the_loader(tmp_path, case):
    gt = build_gt()
    DROPPED_ONLY[case](gt)
    ground_truth = load_ground_truth(_write(tmp_path, gt))
    ids = {a["id"] for a in ground_truth.coco("bbox").dataset["annotations"]}
    if case == "duplicate id":
        assert len(ids) == len(gt["annotations"])  # renumbered, both kept
    else:
        assert len(ids) == len(gt["annotations"]) - 1
    assert ground_truth.stats


UNREADABLE = {
    "invalid JSON": (lambda path: open(path, "w").write("{\"images\": ["), "invalid JSON"),
    "string coordinate": (lambda gt: _add(gt, segmentation=[[100, 60, "x", 60, 120, 80]]), "finite number"),
    "RLE of another size": (lambda gt: _add(gt, segmentation={"size": [10, 10], "counts": "PQ1"}), "RLE size"),
    "string image id": (lambda gt: gt["images"][0].update(id="1"), "integer"),
    "unknown category": (lambda gt: _add(gt, category_id=77, segmentation=[[1, 2, 3, 4, 5, 6]]), "category_id 77"),
    "bad bbox": (lambda gt: _add(gt, bbox=[1, 2, 3], segmentation=[[1, 2, 3, 4, 5, 6]]), "'bbox' must be"),
    "string area": (lambda gt: _add(gt, area="big", segmentation=[[1, 2, 3, 4, 5, 6]]), "'area'"),
    "no image size and no file": (lambda gt: gt["images"][0].pop("height"), "height/width"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_unreadable_ground_truth_stops_before_any_result(tmp_path, case):
    fn, what = UNREADABLE[case]
    gt = build_gt()
    path = str(tmp_path / "gt.json")
    if case == "invalid JSON":
        fn(path)
    else:
        fn(gt)
        _write(tmp_path, gt)
    with pytest.raises(AnnotationError, match=what) as e:
        COCOMetric(path, output_eval=str(tmp_path))  # what the evaluator builds before running the model
    assert path in str(e.value) and "\n" not in str(e.value)


def test_json_eval_uses_the_same_policy(tmp_path):
    clean = _write(tmp_path, build_gt(), "clean.json")
    gt = build_gt()
    DEGENERATE["polygon with 2 points"][0](gt)
    DEGENERATE["no area"][0](gt)
    broken = _write(tmp_path, gt)
    metric = COCOMetric(clean, output_eval=str(tmp_path / "ev"))
    metric.update(gt_to_dets(clean))
    expected = metric.accumulate()
    again = json_eval(broken, str(tmp_path / "ev" / "bbox.json"), str(tmp_path / "ev" / "mask.json"))
    assert again["segm"] == expected["segm"]
