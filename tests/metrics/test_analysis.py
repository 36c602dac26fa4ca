"""Error breakdown, PR curves and confusion matrix on a hand-made case whose numbers are worked out below."""
import json

import cv2
import numpy as np
import pytest

from ppdet_htc.metrics.analysis import ERROR_STEPS, analyze_results, confusion_matrix, error_breakdown, pr_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _ann(i, cat, box):
    x, y, w, h = box
    return {"id": i, "image_id": 1, "category_id": cat, "bbox": list(box), "area": w * h, "iscrowd": 0,
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


@pytest.fixture
def toy(tmp_path):
    """One 200x200 image. A (supercategory s1) has 3 objects, B (s2) and C (s1) one each.

    Detections, all of class A, by score: dC on the C object (0.97), dB on the B object (0.95), d1 exactly on
    a1 (0.9), d3 on background (0.85), d2 on a2 with IoU 0.6 (0.8). a3 is missed.
    """
    gt = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 200, "height": 200}],
        "categories": [{"id": 1, "name": "A", "supercategory": "s1"}, {"id": 2, "name": "B", "supercategory": "s2"},
                       {"id": 3, "name": "C", "supercategory": "s1"}],
        "annotations": [_ann(1, 1, (10, 10, 40, 40)), _ann(2, 1, (100, 10, 40, 40)), _ann(3, 1, (10, 100, 40, 40)),
                        _ann(4, 2, (100, 100, 40, 40)), _ann(5, 3, (150, 150, 40, 40))],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    dets = [((150, 150, 40, 40), 0.97), ((100, 100, 40, 40), 0.95), ((10, 10, 40, 40), 0.9),
            ((60, 60, 20, 20), 0.85), ((110, 10, 40, 40), 0.8)]
    results = [{"image_id": 1, "category_id": 1, "bbox": list(b), "score": s} for b, s in dets]
    return str(path), results


def test_error_breakdown_matches_the_hand_computed_ap(toy):
    anno, results = toy
    out = error_breakdown(anno, results, "bbox")
    assert out["categories"] == ["A", "B", "C"] and tuple(out["steps"]) == ERROR_STEPS
    a = {s: float(out["ap"][s][0]) for s in ERROR_STEPS}
    # COCO interpolates precision on 101 recall points; recall 1/3 covers 34 of them, 2/3 covers 67.
    # C75: only d1 is right, at rank 3 -> precision 1/3 up to recall 1/3.
    assert a["C75"] == pytest.approx(34 * (1 / 3) / 101)
    # C50: d2 is right too (rank 5): precision 2/5 up to recall 2/3.  Loc (IoU 0.1) changes nothing here.
    assert a["C50"] == pytest.approx(67 * 0.4 / 101)
    assert a["Loc"] == pytest.approx(a["C50"])
    # Sim: dC, on an object of the same supercategory, no longer counts: 2 right of 4 -> 1/2 up to 2/3.
    assert a["Sim"] == pytest.approx(67 * 0.5 / 101)
    # Oth: dB no longer counts either: d1 (1.0), d3 wrong, d2 (2/3).
    assert a["Oth"] == pytest.approx((34 * 1.0 + 33 * (2 / 3)) / 101)
    # BG: background detections gone, precision 1 up to the recall reached (2/3); FN: everything found.
    assert a["BG"] == pytest.approx(67 / 101) and a["FN"] == 1.0
    for j in (1, 2):  # B and C were never detected as themselves
        assert [float(out["ap"][s][j]) for s in ERROR_STEPS] == [0, 0, 0, 0, 0, 0, 1.0]
    assert out["mean_ap"]["Oth"] == pytest.approx(a["Oth"] / 3)


def test_pr_curves_and_confusion_matrix(toy):
    anno, results = toy
    curves = pr_curves(anno, results, "bbox")
    assert curves["ap"]["0.75"][0] == pytest.approx(34 * (1 / 3) / 101)
    assert curves["ap"]["0.50"][0] == pytest.approx(67 * 0.4 / 101)
    assert curves["precision"]["0.50"].shape == (101, 3)
    matrix, names = confusion_matrix(anno, results, score_thr=0.3, iou_thr=0.5)
    assert names == ["A", "B", "C", "background"]
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = 2  # d1, d2
    expected[1, 0] = 1  # the B object found as A
    expected[2, 0] = 1  # the C object found as A
    expected[3, 0] = 1  # d3 on background
    expected[0, 3] = 1  # a3 missed
    np.testing.assert_array_equal(matrix, expected)
    matrix, _ = confusion_matrix(anno, results, score_thr=0.96)  # only dC left
    assert matrix[2, 0] == 1 and matrix[0, 3] == 3 and matrix[1, 3] == 1 and matrix.sum() == 5


def test_a_right_detection_wins_over_a_better_scored_wrong_one(tmp_path):
    gt = {"images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 100}],
          "categories": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}],
          "annotations": [_ann(1, 1, (10, 10, 40, 40))]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    results = [{"image_id": 1, "category_id": 2, "bbox": [10, 10, 40, 40], "score": 0.9},
               {"image_id": 1, "category_id": 1, "bbox": [11, 10, 40, 40], "score": 0.8}]
    matrix, _ = confusion_matrix(str(path), results)
    assert matrix[0, 0] == 1 and matrix[2, 1] == 1 and matrix.sum() == 2


def test_analyze_results_writes_valid_pictures(toy, tmp_path):
    anno, results = toy
    bbox = tmp_path / "bbox.json"
    bbox.write_text(json.dumps(results))
    written = analyze_results(anno, str(bbox), None, str(tmp_path / "plots"))
    names = sorted(p.rsplit("/", 1)[-1] for p in written)
    assert names == ["analysis.json", "confusion_matrix.png", "error_breakdown_bbox.png",
                     "error_breakdown_bbox_per_class.png", "pr_curves_bbox.png"]
    for p in written:
        if p.endswith(".png"):
            data = open(p, "rb").read()
            assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
            im = cv2.imread(p)
            assert im is not None and im.shape[0] > 200 and im.shape[1] > 200 and im.std() > 5
    summary = json.load(open(str(tmp_path / "plots" / "analysis.json")))
    assert summary["bbox"]["error_breakdown"]["per_class"]["A"]["FN"] == 1.0
    assert summary["confusion_matrix"]["counts"][0][0] == 2
    with pytest.raises(ValueError, match="bbox_json and/or mask_json"):
        analyze_results(anno, None, None, str(tmp_path / "x"))


def test_degenerate_ground_truth_is_read_as_evaluation_reads_it(toy, tmp_path):
    """`eval.py --plot` after an evaluation that dropped degenerate polygons must not crash in pycocotools:
    the pictures use the same ground truth as the metrics (coco_gt.load_ground_truth)."""
    anno, results = toy
    gt = json.load(open(anno))
    first = gt["annotations"][0]
    for k, segm in enumerate(([[10, 10, 40, 40]], [], [[]])):  # < 3 points, empty: pycocotools cannot rasterise
        gt["annotations"].append(dict(first, id=100 + k, bbox=[60 + 5 * k, 150, 20, 20], area=400.0,
                                      segmentation=segm))
    degenerate = tmp_path / "degenerate.json"
    degenerate.write_text(json.dumps(gt))
    masks = [dict(r, segmentation=_ann(0, 1, r["bbox"])["segmentation"]) for r in results]
    from pycocotools import mask as mask_util

    for r in masks:
        rle = mask_util.frPyObjects(r["segmentation"], 200, 200)[0]
        r["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    (tmp_path / "mask.json").write_text(json.dumps(masks))
    clean = error_breakdown(anno, masks, "segm")
    broken = error_breakdown(str(degenerate), masks, "segm")
    for s in ERROR_STEPS:  # the degenerate masks are dropped for mask AP, as evaluation drops them
        np.testing.assert_allclose(broken["ap"][s], clean["ap"][s])
    written = analyze_results(str(degenerate), None, str(tmp_path / "mask.json"), str(tmp_path / "plots"))
    assert any(p.endswith("pr_curves_segm.png") for p in written)
    # their boxes are real objects: the box analysis counts them (3 more objects of class A)
    assert pr_curves(str(degenerate), results, "bbox")["ap"]["0.50"][0] < pr_curves(anno, results, "bbox")["ap"]["0.50"][0]


def test_unreadable_results_file_is_a_user_error(toy, tmp_path):
    from ppdet_htc.errors import ResultsFileError

    anno, _ = toy
    (tmp_path / "bbox.json").write_text("{not json")
    with pytest.raises(ResultsFileError, match="bbox.json"):
        analyze_results(anno, str(tmp_path / "bbox.json"), None, str(tmp_path / "plots"))
    (tmp_path / "bbox.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(ResultsFileError, match="JSON list"):
        analyze_results(anno, str(tmp_path / "bbox.json"), None, str(tmp_path / "plots"))
