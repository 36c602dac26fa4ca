"""Parity with the reference implementation on ../shared/reference/golden_small (20 images, R18 HTC).

The reference's detections (score > 0.001) and COCO metrics were produced by PaddleDetection's HTC with
the same weights. Parity: bbox/segm AP within 0.3 points, and every reference detection with score >= 0.3
found again (same image and class, box IoU >= 0.95, score within 0.01, mask IoU >= 0.9), on the exact path
and on the default fast runtime; and the fast runtime within issue 15's tolerance of the exact path
(detections matched at box IoU >= 0.98 and score within 0.005, AP within 0.1 points).
"""
import json
import os
from collections import defaultdict

import numpy as np
import paddle
import pycocotools.mask as mask_util
import pytest

from ppdet_htc.engine.infer import results_records
from ppdet_htc.engine.predictor import Detector
from ppdet_htc.engine.runtimes import DEFAULT_RUNTIME
from ppdet_htc.metrics.coco_eval import STAT_NAMES, detections_to_coco, evaluate_results
from pycocotools.coco import COCO

GOLDEN_CONFIG = """
_BASE_: ['{ref}/configs/htc/htc_r50_fpn_1x_coco.yml']
num_classes: 4
use_gpu: false
ResNet: {{depth: 18, variant: b, norm_type: bn, freeze_norm: false, freeze_at: -1, return_idx: [0, 1, 2, 3]}}
FPN: {{out_channel: 128}}
HybridTaskCascadeTwoFCHead: {{out_channel: 256}}
HybridTaskMaskFeat: {{out_channel: 128, num_convs: 4}}
TestDataset: !ImageFolder {{anno_path: {golden}/data/annotations/instances_val.json}}
TestReader:
  sample_transforms:
  - Decode: {{}}
  - Resize: {{target_size: [384, 640], keep_ratio: true, interp: 1}}
  - NormalizeImage: {{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
  - Permute: {{}}
  batch_transforms:
  - PadBatch: {{pad_to_stride: 32}}
  batch_size: 1
"""


def _box_iou(a, b):
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module", params=["exact", "fast"])
def golden_run(request, tmp_path_factory):
    """The golden case on the exact path and on the default fast runtime (engine/runtimes.py)."""
    return _golden_run(tmp_path_factory, exact=request.param == "exact")


_RUNS = {}


def _golden_run(tmp_path_factory, exact):
    """One run of the 20 images per path (cached: the reference tests and the fast-vs-exact test share them)."""
    if exact not in _RUNS:
        _RUNS[exact] = _run_golden(tmp_path_factory, exact)
    return _RUNS[exact]


def _run_golden(tmp_path_factory, exact):
    ref = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "reference"))
    golden = os.path.join(ref, "golden_small")
    if not os.path.isdir(golden):
        pytest.skip("golden_small parity case not available")
    tmp = tmp_path_factory.mktemp("golden")
    npz = np.load(os.path.join(golden, "htc_r18_shapes_epoch1_fp16.npz"))
    weights = str(tmp / "golden.pdparams")
    paddle.save({k: paddle.to_tensor(npz[k].astype("float32")) for k in npz.files}, weights)  # as its README says
    cfg_path = tmp / "golden.yml"
    cfg_path.write_text(GOLDEN_CONFIG.format(ref=ref, golden=golden))
    det = Detector(str(cfg_path), weights=weights, exact=exact, runtime=None if exact else DEFAULT_RUNTIME)
    assert det.runtime == ("exact" if exact else DEFAULT_RUNTIME)  # the fast path is not a fallback
    anno = os.path.join(golden, "data", "annotations", "instances_val.json")
    coco = COCO(anno)
    ids = sorted(coco.getImgIds())
    files = [os.path.join(golden, "data", "val", coco.loadImgs(i)[0]["file_name"]) for i in ids]
    dets = det.predict(files)
    for d, i in zip(dets, ids):
        d["im_id"] = i
        d["masks"] = d["masks"].astype(np.uint8)
    bbox, segm = detections_to_coco(dets, det.clsid2catid)
    return {"golden": golden, "coco": coco, "bbox": bbox, "segm": segm, "dets": dets, "det": det}


def test_metrics_match_reference(golden_run):
    ref = json.load(open(os.path.join(golden_run["golden"], "ref_metrics.json")))
    for iou_type in ("bbox", "segm"):
        results = [dict(r) for r in golden_run[iou_type]]
        stats, _ = evaluate_results(golden_run["coco"], results, iou_type)
        ours = np.array([stats[k] for k in STAT_NAMES], dtype=np.float64)
        assert np.abs(ours[:12] - np.array(ref[iou_type])).max() <= 0.003, (iou_type, ours[:12], ref[iou_type])


def test_detections_match_reference(golden_run):
    golden = golden_run["golden"]
    ref_b = json.load(open(os.path.join(golden, "ref_bbox.json")))
    ref_m = json.load(open(os.path.join(golden, "ref_mask.json")))
    ours = defaultdict(list)
    for b, m in zip(golden_run["bbox"], golden_run["segm"]):
        ours[(b["image_id"], b["category_id"])].append((b, m))
    checked = missed = 0
    for rb, rm in zip(ref_b, ref_m):
        if rb["score"] < 0.3:
            continue
        checked += 1
        cands = ours[(rb["image_id"], rb["category_id"])]
        ok = False
        for b, m in cands:
            if _box_iou(rb["bbox"], b["bbox"]) >= 0.95 and abs(b["score"] - rb["score"]) <= 0.01:
                miou = mask_util.iou([rm["segmentation"]], [m["segmentation"]], [0])[0][0]
                ok = ok or miou >= 0.9
        missed += not ok
    assert checked >= 50
    assert missed == 0, "{} of {} reference detections not found".format(missed, checked)
    assert len(golden_run["bbox"]) == len(ref_b)  # same number of detections overall


def test_results_file_records_pair_boxes_and_masks(golden_run):
    det = golden_run["det"]
    d = golden_run["dets"][0]
    recs = results_records([d], det.clsid2catid, {d["im_id"]: "x.jpg"})
    assert len(recs) == len(d["scores"])
    assert all(set(r) >= {"image_id", "category_id", "bbox", "score", "segmentation", "file_name"} for r in recs)
    decoded = mask_util.decode([r["segmentation"] for r in recs[:3]])
    np.testing.assert_array_equal(decoded.transpose(2, 0, 1), d["masks"][:3])


@pytest.fixture(scope="module")
def golden_exact(tmp_path_factory):
    return _golden_run(tmp_path_factory, exact=True)


def test_fast_runtime_matches_the_exact_path(tmp_path_factory, golden_exact):
    """Default fast runtime vs exact path: every detection matched at box IoU >= 0.98 and score within 0.005
    (both ways, above the tolerance band of NMS's score threshold), and AP within 0.1 points."""
    from tests.detection_parity import assert_runs_agree

    fast = _golden_run(tmp_path_factory, exact=False)
    assert fast["det"].runtime != "exact"
    assert_runs_agree(golden_exact, fast, nms_score_threshold=0.001)  # the config's NMS score threshold
