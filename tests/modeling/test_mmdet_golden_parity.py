"""Parity with mmdetection on ../shared/reference/mmdet/golden_visible (20 images, ResNet-18 HTC).

mmdetection's own results (2.x test behaviour: the three mask stages averaged, boxes rescaled before the
class-wise NMS) for weights in mmdetection's layout; we convert the same weights with the converter, run
the configs tests/fixtures/mmdet_golden_visible{,_semantic}.yml and require what the issue calls parity:
bbox and segm AP within 0.1 point of mmdetection's, and every mmdetection detection with score >= 0.3 found
again (same image and class, box IoU >= 0.98, score within 0.005, mask IoU >= 0.95).
The ``plain`` files (mmdetection 3.3.0 as released: only the last mask stage) are matched by switching
the mask fusion to the last stage, which shows that the switch is the only difference.
These comparisons run on the exact path; the default fast runtime (the model exported and run by Paddle
Inference, engine/runtimes.py) must stay within issue 15's tolerance of it: every detection matched at box
IoU >= 0.98 and score within 0.005, both ways, and AP within 0.1 points.
"""
import json
import os
from collections import defaultdict

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO

from ppdet_htc.engine.convert_mmdet import convert_mmdet_checkpoint
from ppdet_htc.engine.predictor import Detector
from ppdet_htc.engine.runtimes import DEFAULT_RUNTIME
from ppdet_htc.metrics.coco_eval import STAT_NAMES, detections_to_coco, evaluate_results

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
CASES = {
    "noseg": ("mmdet_golden_visible.yml", ["weights_noseg_mmdet_fp16.npz"]),
    "semantic": ("mmdet_golden_visible_semantic.yml", ["weights_noseg_mmdet_fp16.npz", "semantic_head_mmdet_fp16.npz"]),
}
LAST_STAGE_MASKS = ["HybridTaskMaskHead.mask_fusion={name: MaskStageFusion, stages: last}"]


def _box_iou(a, b):
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module")
def golden(shared_reference_module):
    root = os.path.join(shared_reference_module, "mmdet", "golden_visible")
    data = os.path.join(shared_reference_module, "golden_small", "data")
    if not os.path.isdir(root):
        pytest.skip("mmdet golden_visible parity cases not available")
    return {"root": root, "data": data, "anno": os.path.join(data, "annotations", "instances_val.json")}


@pytest.fixture(scope="module")
def shared_reference_module():
    path = os.path.normpath(os.path.join(REPO, "..", "shared", "reference"))
    if not os.path.isdir(path):
        pytest.skip("../shared/reference is not available")
    return path


_RUNS = {}


_WEIGHTS = {}


def run_case(golden, tmp_path_factory, case, overrides=(), runtime="exact"):
    """COCO results of the fixture config of ``case`` on the 20 images with ``runtime`` (cached per module)."""
    key = (case, tuple(overrides), runtime)
    if key in _RUNS:
        return _RUNS[key]
    config, files = CASES[case]
    config = os.path.join(FIXTURES, config)
    if case not in _WEIGHTS:
        _WEIGHTS[case] = str(tmp_path_factory.mktemp("mmdet_" + case) / "converted.pdparams")
        convert_mmdet_checkpoint([os.path.join(golden["root"], f) for f in files], config, _WEIGHTS[case])
    det = Detector(config, weights=_WEIGHTS[case], runtime=runtime,
                   overrides=["EvalDataset.dataset_dir=" + golden["data"],
                              "TestDataset.dataset_dir=" + golden["data"]] + list(overrides))
    assert det.runtime == runtime  # the fast path is not a fallback to the dynamic graph
    coco = COCO(golden["anno"])
    ids = sorted(coco.getImgIds())
    files = [os.path.join(golden["data"], "val", coco.loadImgs(i)[0]["file_name"]) for i in ids]
    dets = det.predict(files)
    for d, i in zip(dets, ids):
        d["im_id"] = i
        d["masks"] = d["masks"].astype(np.uint8)
    bbox, segm = detections_to_coco(dets, {i: c for i, c in enumerate(sorted(coco.getCatIds()))})
    _RUNS[key] = {"coco": coco, "bbox": bbox, "segm": segm, "dets": dets}
    return _RUNS[key]


def check_metrics(run, target):
    for iou_type in ("bbox", "segm"):
        stats, _ = evaluate_results(run["coco"], [dict(r) for r in run[iou_type]], iou_type)
        ours = np.array([stats[k] for k in STAT_NAMES][:12], dtype=np.float64)
        ref = np.array(target[iou_type], dtype=np.float64)
        assert abs(ours[0] - ref[0]) <= 0.001, (iou_type, "AP", ours[0], ref[0])  # 0.1 point
        assert np.abs(ours - ref).max() <= 0.001, (iou_type, ours, ref)


def missing_detections(run, ref_bbox, ref_segm, min_score=0.3):
    """mmdetection detections (score >= min_score) without a match in ours; also returns how many were checked."""
    ours = defaultdict(list)
    for b, m in zip(run["bbox"], run["segm"]):
        ours[(b["image_id"], b["category_id"])].append((b, m))
    missing, checked = [], 0
    for rb, rm in zip(ref_bbox, ref_segm):
        if rb["score"] < min_score:
            continue
        checked += 1
        found = False
        for b, m in ours[(rb["image_id"], rb["category_id"])]:
            if _box_iou(rb["bbox"], b["bbox"]) >= 0.98 and abs(b["score"] - rb["score"]) <= 0.005:
                if mask_util.iou([rm["segmentation"]], [m["segmentation"]], [0])[0][0] >= 0.95:
                    found = True
                    break
        if not found:
            missing.append(rb)
    return missing, checked


def _load(golden, name):
    with open(os.path.join(golden["root"], name)) as f:
        return json.load(f)


@pytest.mark.parametrize("case", sorted(CASES))
def test_mmdet_parity_avg3(golden, tmp_path_factory, case):
    run = run_case(golden, tmp_path_factory, case)
    check_metrics(run, _load(golden, "{}_avg3_metrics.json".format(case)))
    missing, checked = missing_detections(run, _load(golden, "{}_avg3_bbox.json".format(case)),
                                          _load(golden, "{}_avg3_mask.json".format(case)))
    assert checked >= 60
    assert not missing, "{} of {} mmdetection detections not found, e.g. {}".format(len(missing), checked, missing[:2])


@pytest.mark.parametrize("case", sorted(CASES))
def test_mmdet_3x_last_stage_masks_are_one_switch_away(golden, tmp_path_factory, case):
    run = run_case(golden, tmp_path_factory, case, LAST_STAGE_MASKS)
    check_metrics(run, _load(golden, "{}_plain_metrics.json".format(case)))
    missing, checked = missing_detections(run, _load(golden, "{}_plain_bbox.json".format(case)),
                                          _load(golden, "{}_plain_mask.json".format(case)))
    assert checked >= 60 and not missing, "{} of {} not found".format(len(missing), checked)


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_runtime_matches_the_exact_path(golden, tmp_path_factory, case):
    """The mmdetection convention on the default fast runtime vs the exact path: every detection above the
    NMS score threshold (plus the tolerance) matched at box IoU >= 0.98 and score within 0.005, both ways,
    and every AP within 0.1 points."""
    from tests.detection_parity import assert_runs_agree

    exact = run_case(golden, tmp_path_factory, case)
    fast = run_case(golden, tmp_path_factory, case, runtime=DEFAULT_RUNTIME)
    assert sum(len(d["scores"]) for d in exact["dets"]) >= 1000  # plenty to compare
    assert_runs_agree(exact, fast, nms_score_threshold=0.001)  # BatchedNMS.score_threshold of the config
