"""COCO evaluation: perfect predictions, file/in-process agreement, empty cases, result encoding."""
import json
import logging
import os

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ppdet_htc.metrics import (
    STAT_NAMES,
    COCOMetric,
    detections_to_coco,
    format_metrics,
    gt_to_results,
    json_eval,
)
from ppdet_htc.metrics import coco_eval

CATID2CLSID = {1: 0, 5: 1, 9: 2}


def gt_to_dets(gt_path, skip_images=(), perturb=False, seed=0):
    """Per-image model-style outputs built from the ground truth (crowd regions left out)."""
    coco = COCO(gt_path)
    rng = np.random.default_rng(seed)
    dets = []
    for im_id in sorted(coco.imgs):
        if im_id in skip_images:
            continue
        img = coco.imgs[im_id]
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[im_id])) if not a["iscrowd"]]
        boxes, labels, masks = [], [], []
        for a in anns:
            x, y, w, h = a["bbox"]
            mask = coco.annToMask(a)
            if perturb:
                dx, dy = rng.integers(-4, 5, size=2)
                x, y = x + dx, y + dy
                mask = np.roll(mask, (int(dy), int(dx)), axis=(0, 1))
            boxes.append([x, y, x + w, y + h])
            labels.append(CATID2CLSID[a["category_id"]])
            masks.append(mask)
        if perturb:  # one false positive of a wrong class per image
            boxes.append([1.5, 2.25, 20.75, 18.5])
            labels.append(2)
            fp = np.zeros((img["height"], img["width"]), np.uint8)
            fp[2:18, 1:20] = 1
            masks.append(fp)
        k = len(boxes)
        scores = rng.uniform(0.3, 1.0, size=k) if perturb else np.ones(k)
        dets.append(
            {
                "im_id": im_id,
                "boxes": np.asarray(boxes, np.float32).reshape(k, 4),
                "scores": scores.astype(np.float32),
                "labels": np.asarray(labels, np.int64),
                "masks": np.asarray(masks, np.uint8).reshape(k, img["height"], img["width"]),
            }
        )
    return dets


def run_metric(gt_path, dets, out_dir, **kwargs):
    metric = COCOMetric(gt_path, output_eval=str(out_dir), **kwargs)
    metric.update(dets)
    return metric, metric.accumulate()


# ---------------------------------------------------------------------------------------------
# (a) perfect predictions
# ---------------------------------------------------------------------------------------------


def test_perfect_predictions_through_metric_give_ap_one(gt_path, tmp_path):
    _, result = run_metric(gt_path, gt_to_dets(gt_path), tmp_path / "out")
    for iou_type in ("bbox", "segm"):
        stats = result[iou_type]
        assert list(stats) == list(STAT_NAMES)
        for name in ("AP", "AP50", "AP75", "APs", "APm", "AR10", "AR100", "ARs", "ARm"):
            assert stats[name] == pytest.approx(1.0), (iou_type, name)
        assert stats["AR1"] < 1.0  # image 7 holds two cats: one detection per class cannot find both
        assert stats["APl"] == -1.0  # no large objects in the ground truth
    for name in ("bbox.json", "mask.json", "metrics.json"):
        assert os.path.isfile(tmp_path / "out" / name)


def test_gt_to_results_scores_perfectly(gt_path, tmp_path):
    bbox_results, mask_results = gt_to_results(gt_path)
    assert len(bbox_results) == 7 and len(mask_results) == 7  # the crowd annotation is skipped
    assert all(r["score"] == 1.0 for r in bbox_results + mask_results)
    assert all(isinstance(r["segmentation"]["counts"], str) for r in mask_results)
    (tmp_path / "b.json").write_text(json.dumps(bbox_results))
    (tmp_path / "m.json").write_text(json.dumps(mask_results))
    result = json_eval(gt_path, str(tmp_path / "b.json"), str(tmp_path / "m.json"))
    assert result["bbox"]["AP"] == pytest.approx(1.0)
    assert result["segm"]["AP"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# (b) json_eval agrees with the in-process metric; metrics.json holds the returned dict
# ---------------------------------------------------------------------------------------------


def test_json_eval_equals_in_process_metric(gt_path, tmp_path):
    out = tmp_path / "out"
    _, result = run_metric(gt_path, gt_to_dets(gt_path, perturb=True), out, classwise=True)
    assert 0.0 < result["bbox"]["AP"] < 1.0 and 0.0 < result["segm"]["AP"] < 1.0
    again = json_eval(gt_path, str(out / "bbox.json"), str(out / "mask.json"), classwise=True)
    assert again == result
    with open(out / "metrics.json", encoding="utf-8") as f:
        assert json.load(f) == result


def test_json_eval_single_type_and_writes_metrics_when_asked(gt_path, tmp_path):
    out = tmp_path / "out"
    _, result = run_metric(gt_path, gt_to_dets(gt_path, perturb=True), out)
    only_bbox = json_eval(gt_path, bbox_json=str(out / "bbox.json"), output_eval=str(tmp_path / "je"))
    assert set(only_bbox) == {"bbox"} and only_bbox["bbox"] == result["bbox"]
    with open(tmp_path / "je" / "metrics.json", encoding="utf-8") as f:
        assert json.load(f) == only_bbox


def test_json_eval_missing_file_is_named(gt_path, tmp_path):
    missing = str(tmp_path / "nope" / "bbox.json")
    with pytest.raises(FileNotFoundError, match="nope/bbox.json"):
        json_eval(gt_path, bbox_json=missing)
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match="missing_anno.json"):
        json_eval(str(tmp_path / "missing_anno.json"), bbox_json=str(tmp_path / "empty.json"))
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="bad.json must hold a JSON list"):
        json_eval(gt_path, bbox_json=str(tmp_path / "bad.json"))
    with pytest.raises(ValueError):
        json_eval(gt_path)


# ---------------------------------------------------------------------------------------------
# (c) an image without detections; (d) no detections at all
# ---------------------------------------------------------------------------------------------


def test_image_without_detections_lowers_ap(gt_path, tmp_path):
    dets = gt_to_dets(gt_path)
    img7 = next(d for d in dets if d["im_id"] == 7)
    img7.update(
        boxes=np.zeros((0, 4), np.float32),
        scores=np.zeros(0, np.float32),
        labels=np.zeros(0, np.int64),
        masks=np.zeros((0, 30, 50), np.uint8),
    )
    _, result = run_metric(gt_path, dets, tmp_path)
    for iou_type in ("bbox", "segm"):
        assert 0.0 < result[iou_type]["AP"] < 1.0
        assert result[iou_type]["AR100"] == pytest.approx(5 / 7, abs=0.1)
    with open(tmp_path / "bbox.json", encoding="utf-8") as f:
        assert {r["image_id"] for r in json.load(f)} == {1, 2, 3}


def test_all_empty_predictions_give_zeros_and_warn(gt_path, tmp_path, caplog):
    dets = [
        {"im_id": i, "boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
         "labels": np.zeros(0, np.int64), "masks": None}
        for i in (1, 2, 3, 7)
    ]
    with caplog.at_level(logging.WARNING, logger="ppdet_htc.metrics.coco_eval"):
        metric, result = run_metric(gt_path, dets, tmp_path, classwise=True)
    assert result["bbox"] == {name: 0.0 for name in STAT_NAMES}
    assert result["segm"] == {name: 0.0 for name in STAT_NAMES}
    assert result["bbox_classwise"] == {"cat": 0.0, "dog": 0.0, "bird": 0.0}
    assert "no detections were produced" in caplog.text
    with open(tmp_path / "bbox.json", encoding="utf-8") as f:
        assert json.load(f) == []
    assert json_eval(gt_path, str(tmp_path / "bbox.json"), str(tmp_path / "mask.json")) == {
        "bbox": result["bbox"], "segm": result["segm"]}
    assert "0.0" in metric.format_table()


def test_accumulate_without_update_and_reset(gt_path, tmp_path):
    metric = COCOMetric(gt_path, output_eval=str(tmp_path), iou_types=("bbox",))
    assert metric.accumulate() == {"bbox": {name: 0.0 for name in STAT_NAMES}}
    metric.update(gt_to_dets(gt_path))
    assert metric.accumulate()["bbox"]["AP"] == pytest.approx(1.0)
    metric.reset()
    assert metric.accumulate()["bbox"]["AP"] == 0.0


def test_accumulate_twice_gives_same_numbers(gt_path, tmp_path):
    metric, first = run_metric(gt_path, gt_to_dets(gt_path, perturb=True), tmp_path)
    assert metric.accumulate() == first
    with open(tmp_path / "mask.json", encoding="utf-8") as f:
        assert all(set(r) == {"image_id", "category_id", "segmentation", "score"} for r in json.load(f))


# ---------------------------------------------------------------------------------------------
# (e) detections -> COCO results, checked independently
# ---------------------------------------------------------------------------------------------


def _random_det(rng, im_id, k, h, w, num_classes=3):
    x1 = rng.uniform(0, w / 2, k)
    y1 = rng.uniform(0, h / 2, k)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, w / 2, k), y1 + rng.uniform(1, h / 2, k)], 1)
    return {
        "im_id": im_id,
        "boxes": boxes.astype(np.float32),
        "scores": rng.uniform(0, 1, k).astype(np.float32),
        "labels": rng.integers(0, num_classes, k).astype(np.int64),
        "masks": (rng.uniform(size=(k, h, w)) > 0.6).astype(np.uint8),
    }


def test_detections_to_coco_matches_independent_decode(monkeypatch):
    rng = np.random.default_rng(3)
    dets = [_random_det(rng, 11, 5, 23, 31), _random_det(rng, 12, 3, 17, 9)]
    calls = []
    real_encode = coco_eval.mask_util.encode
    monkeypatch.setattr(coco_eval.mask_util, "encode", lambda m: calls.append(m.shape) or real_encode(m))
    bbox_results, mask_results = detections_to_coco(dets, {0: 1, 1: 5, 2: 9})
    assert calls == [(23, 31, 5), (17, 9, 3)]  # one encode call per image

    cat_of = {0: 1, 1: 5, 2: 9}
    rows = [(d, j) for d in dets for j in range(len(d["scores"]))]
    assert len(bbox_results) == len(mask_results) == len(rows)
    for (det, j), box_res, mask_res in zip(rows, bbox_results, mask_results):
        x1, y1, x2, y2 = (float(v) for v in det["boxes"][j])
        assert box_res == {
            "image_id": det["im_id"],
            "category_id": cat_of[int(det["labels"][j])],
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(det["scores"][j]),
        }
        assert all(type(v) is float for v in box_res["bbox"]) and type(box_res["score"]) is float
        rle = mask_res["segmentation"]
        assert isinstance(rle["counts"], str)
        assert rle["size"] == list(det["masks"].shape[1:])
        decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode("utf-8")})
        np.testing.assert_array_equal(decoded, det["masks"][j])
        assert mask_res["category_id"] == box_res["category_id"]
        assert mask_res["score"] == box_res["score"] and mask_res["image_id"] == det["im_id"]
    json.dumps([bbox_results, mask_results])  # plain python types only


def test_detections_to_coco_skips_negative_labels_and_handles_no_masks():
    det = {
        "im_id": np.array([4]),
        "boxes": np.array([[0, 0, 2, 2], [1, 1, 3, 3]], np.float32),
        "scores": np.array([0.9, 0.8], np.float32),
        "labels": np.array([-1, 1], np.int64),
        "masks": None,
    }
    bbox_results, mask_results = detections_to_coco(det, [1, 5, 9])
    assert bbox_results == [{"image_id": 4, "category_id": 5, "bbox": [1.0, 1.0, 2.0, 2.0],
                             "score": float(np.float32(0.8))}]
    assert mask_results == []
    empty = {"im_id": 5, "boxes": np.zeros(0), "scores": [], "labels": [], "masks": np.zeros(0)}
    assert detections_to_coco([empty], [1]) == ([], [])


def test_detections_to_coco_binarises_nonzero_masks():
    mask = np.zeros((1, 6, 5), np.uint8)
    mask[0, 1:4, 2:4] = 255
    det = {"im_id": 1, "boxes": np.array([[2, 1, 4, 4]], np.float32), "scores": np.array([0.5], np.float32),
           "labels": np.array([0]), "masks": mask}
    _, (res,) = detections_to_coco(det, {0: 1})
    rle = dict(res["segmentation"], counts=res["segmentation"]["counts"].encode())
    np.testing.assert_array_equal(mask_util.decode(rle), (mask[0] > 0).astype(np.uint8))


def test_unknown_label_is_named():
    det = {"im_id": 3, "boxes": np.zeros((2, 4), np.float32), "scores": np.ones(2, np.float32),
           "labels": np.array([0, 7]), "masks": None}
    with pytest.raises(ValueError, match=r"image 3: label\(s\) \[7\]"):
        detections_to_coco(det, {0: 1, 1: 5, 2: 9})


def test_shape_mismatch_is_named():
    det = {"im_id": 3, "boxes": np.zeros((2, 4), np.float32), "scores": np.ones(3, np.float32),
           "labels": np.zeros(3, np.int64), "masks": None}
    with pytest.raises(ValueError, match="image 3: 'boxes'"):
        detections_to_coco([det], {0: 1})


def test_update_checks_image_id_and_mask_size(gt_path, tmp_path):
    metric = COCOMetric(gt_path, output_eval=str(tmp_path))
    good = gt_to_dets(gt_path)[0]
    with pytest.raises(ValueError, match="image id 99"):
        metric.update(dict(good, im_id=99))
    with pytest.raises(ValueError, match=r"image 1: masks are 60x160 but the image is 120x160"):
        metric.update(dict(good, masks=good["masks"][:, :60]))
    with pytest.raises(ValueError, match="iou_types"):
        COCOMetric(gt_path, iou_types=("keypoints",))
    with pytest.raises(ValueError, match=r"category id\(s\) \[3\]"):
        COCOMetric(gt_path, clsid2catid={0: 1, 1: 3})


def test_default_clsid2catid_follows_annotation_order(gt_path):
    assert COCOMetric(gt_path).clsid2catid == {0: 1, 1: 5, 2: 9}
    assert COCOMetric(gt_path, clsid2catid={"0": 9, "1": 1}).clsid2catid == {0: 9, 1: 1}


def test_output_eval_defaults_to_cwd(gt_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metric = COCOMetric(gt_path, iou_types="bbox")
    metric.update(gt_to_dets(gt_path))
    metric.accumulate()
    assert sorted(os.listdir(tmp_path)) == ["bbox.json", "instances.json", "metrics.json"]


# ---------------------------------------------------------------------------------------------
# (f) classwise AP equals pycocotools restricted to one category
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_classwise_matches_single_category_cocoeval(gt_path, tmp_path, iou_type):
    _, result = run_metric(gt_path, gt_to_dets(gt_path, perturb=True, seed=5), tmp_path, classwise=True)
    table = result[f"{iou_type}_classwise"]
    assert list(table) == ["cat", "dog", "bird"]
    coco_gt = COCO(gt_path)
    res_file = str(tmp_path / ("bbox.json" if iou_type == "bbox" else "mask.json"))
    direct = {}
    for cat_id, name in ((1, "cat"), (5, "dog"), (9, "bird")):
        ev = COCOeval(coco_gt, coco_gt.loadRes(res_file), iou_type)
        ev.params.catIds = [cat_id]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        direct[name] = float(ev.stats[0])
    assert table == direct
    assert len(set(table.values())) > 1  # the classes really differ, so a swap would be caught


# ---------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------


def test_format_table_lists_twelve_lines_in_percent(gt_path, tmp_path, capsys):
    metric, result = run_metric(gt_path, gt_to_dets(gt_path, perturb=True), tmp_path, classwise=True)
    text = metric.format_table()
    assert text == format_metrics(result)
    lines = text.splitlines()
    bbox_lines = lines[lines.index("[bbox]") + 1: lines.index("[bbox]") + 13]
    assert len(bbox_lines) == 12
    assert bbox_lines[0].startswith(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]")
    assert bbox_lines[0].endswith(f"= {100 * result['bbox']['AP']:5.1f}")
    assert bbox_lines[5].endswith("= n/a") or bbox_lines[5].endswith("=   n/a")  # APl: no large objects
    assert bbox_lines[11].startswith(" Average Recall     (AR)")
    assert "[segm] per-category AP" in text
    assert f"{100 * result['segm_classwise']['dog']:5.1f}" in text
    metric.log()
    assert capsys.readouterr().out.strip().endswith(lines[-1].strip())


@pytest.mark.parametrize("dtype", [np.uint8, np.bool_])
def test_encode_masks_equals_plain_pycocotools_encode(dtype):
    rng = np.random.default_rng(3)
    full = (rng.random((5, 37, 53)) < 0.3).astype(dtype)
    full[0] = 0  # an empty mask
    for masks in (full, full[:, :30, :41]):  # contiguous, and a cropped (strided) view as split_outputs makes
        want = mask_util.encode(np.asfortranarray(np.transpose(masks.astype(np.uint8), (1, 2, 0))))
        got = coco_eval._encode_masks(masks)
        assert [g["size"] for g in got] == [w["size"] for w in want]
        assert [g["counts"] for g in got] == [w["counts"].decode() for w in want]
    assert coco_eval._encode_masks(np.zeros((0, 10, 12), np.uint8)) == []
