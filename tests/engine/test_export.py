"""Export to Paddle Inference: the exported program gives the dynamic model's detections and masks."""
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from ppdet_htc.cli import export_main, infer_main
from ppdet_htc.engine.checkpoint import save_state_file
from ppdet_htc.core import load_config
from ppdet_htc.engine.model_builder import build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "fixtures", "htc_tiny.yml")
DEPLOY = os.path.join(REPO, "deploy", "python")


def _images(folder):
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(150, 200), (170, 130), (120, 180)]):
        img = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
        cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, (250, 30, 30), -1)
        p = os.path.join(folder, "img{}.png".format(i))
        cv2.imwrite(p, img)
        paths.append(p)
    blank = os.path.join(folder, "blank.png")
    cv2.imwrite(blank, np.full((140, 160, 3), 127, np.uint8))
    return paths + [blank]


def _border(mask):
    """Pixels whose 3x3 neighbourhood is not uniform in ``mask`` (where rounding may flip a pixel)."""
    m = mask.astype(np.uint8)
    dil = cv2.dilate(m, np.ones((3, 3), np.uint8))
    ero = cv2.erode(m, np.ones((3, 3), np.uint8))
    return dil != ero


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    import paddle

    paddle.seed(1)
    model = build_model(load_config(TINY))
    weights = str(tmp / "tiny.pdparams")
    save_state_file(weights, model.state_dict())
    # A score threshold that random weights pass on textured images but not on the blank one.
    opts = ["weights=" + weights, "BBoxPostProcess.nms.score_threshold=0.18", "TestDataset.anno_path=null"]
    out = export_main(["-c", TINY, "--output_dir", str(tmp / "inference"), "-o"] + opts)
    images = _images(str(tmp))
    dyn_dir = tmp / "dynamic"
    infer_main(["-c", TINY, "--infer_dir", str(tmp), "--output_dir", str(dyn_dir), "--exact", "-o"] + opts)
    return {"model_dir": out, "images": images, "dynamic": json.load(open(dyn_dir / "results.json")), "tmp": tmp}


def test_export_writes_program_params_and_infer_cfg(exported):
    files = os.listdir(exported["model_dir"])
    assert "model.pdiparams" in files and ("model.json" in files or "model.pdmodel" in files)
    import yaml

    cfg = yaml.safe_load(open(os.path.join(exported["model_dir"], "infer_cfg.yml")))
    assert [s["type"] for s in cfg["Preprocess"]] == ["Resize", "NormalizeImage", "Permute", "PadStride"]
    assert len(cfg["label_list"]) == 5 and cfg["draw_threshold"] == 0.5


def test_deploy_predictor_matches_dynamic_model(exported):
    import sys

    sys.path.insert(0, DEPLOY)
    try:
        import infer as deploy_infer
    finally:
        sys.path.remove(DEPLOY)
    out = exported["tmp"] / "deployed"
    deploy_infer.main(["--model_dir", exported["model_dir"], "--image_dir", str(exported["tmp"]),
                       "--output_dir", str(out), "--exact"])
    static = json.load(open(out / "results.json"))
    dynamic = exported["dynamic"]
    by_file = lambda recs: {f: [r for r in recs if r["file_name"] == f] for f in {r["file_name"] for r in recs}}
    s_files, d_files = by_file(static), by_file(dynamic)
    assert "blank.png" not in d_files and "blank.png" not in s_files  # an image with no detection works
    assert set(s_files) == set(d_files) and len(d_files) == 3
    for f in d_files:
        d = sorted(d_files[f], key=lambda r: (-r["score"], r["bbox"][0]))
        s = sorted(s_files[f], key=lambda r: (-r["score"], r["bbox"][0]))
        assert len(d) == len(s), f
        for a, b in zip(d, s):
            assert a["category_id"] == b["category_id"]
            assert abs(a["score"] - b["score"]) <= 1e-4
            assert np.abs(np.array(a["bbox"]) - np.array(b["bbox"])).max() <= 1e-3
            ma, mb = mask_util.decode(a["segmentation"]), mask_util.decode(b["segmentation"])
            diff = ma != mb
            assert not (diff & ~_border(ma)).any(), "masks differ away from the mask border"
            assert diff.sum() <= max(2, 0.01 * ma.sum())
    assert os.path.isfile(out / "img0.png")  # the drawn picture


@pytest.mark.parametrize("engine", [None, "openvino"])
def test_deploy_fast_engines_match_the_exact_path(exported, engine):
    """The default (oneDNN) and OpenVINO engines: every exact detection clearly above the score threshold is
    found again at box IoU >= 0.98 and score within 0.005, and vice versa."""
    import sys

    from tests.detection_parity import SCORE_TOL, unmatched

    import paddle

    if engine == "openvino" and not hasattr(paddle.inference.Config(), "enable_openvino_engine"):
        pytest.skip("Paddle {} has no OpenVINO engine".format(paddle.__version__))
    sys.path.insert(0, DEPLOY)
    try:
        import infer as deploy_infer
    finally:
        sys.path.remove(DEPLOY)
    recs = deploy_infer.main(["--model_dir", exported["model_dir"], "--image_dir", str(exported["tmp"]),
                              "--cpu_threads", "1"] + (["--engine", engine] if engine else []))
    dynamic = exported["dynamic"]
    files = sorted({r["file_name"] for r in dynamic})

    def dets(rs):
        out = []
        for f in files:
            mine = [r for r in rs if r["file_name"] == f]
            out.append({"boxes": np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (r["bbox"] for r in mine)],
                                          np.float64).reshape(-1, 4),
                        "scores": np.array([r["score"] for r in mine]), "labels": np.array([r["category_id"] for r in mine])})
        return out

    assert unmatched(dets(dynamic), dets(recs), 0.18 + SCORE_TOL) == []
    assert unmatched(dets(recs), dets(dynamic), 0.18 + SCORE_TOL) == []
    assert not any(r["file_name"] == "blank.png" for r in recs)


def test_deploy_sets_the_mkl_switch_only_on_amd_and_never_over_the_user(tmp_path):
    import sys

    sys.path.insert(0, DEPLOY)
    try:
        import infer as deploy_infer
    finally:
        sys.path.remove(DEPLOY)
    amd = tmp_path / "amd"
    amd.write_text("vendor_id\t: AuthenticAMD\nflags\t\t: fpu avx avx2 fma\n")
    intel = tmp_path / "intel"
    intel.write_text("vendor_id\t: GenuineIntel\nflags\t\t: fpu avx avx2 fma\n")
    env = {}
    assert deploy_infer.prefer_fast_mkl_on_amd(env, str(amd)) and env["MKL_DEBUG_CPU_TYPE"] == "5"
    env = {}
    assert not deploy_infer.prefer_fast_mkl_on_amd(env, str(intel)) and env == {}
    env = {"MKL_DEBUG_CPU_TYPE": "3"}
    assert not deploy_infer.prefer_fast_mkl_on_amd(env, str(amd)) and env["MKL_DEBUG_CPU_TYPE"] == "3"


@pytest.mark.parametrize("mmdet", [False, True])
def test_deploy_preprocess_equals_the_reader(mmdet, tmp_path):
    """infer_cfg.yml carries the mmdetection pre-processing options, and deploy/python/infer.py's Preprocess
    then gives the reader's image, im_shape and scale_factor bit for bit (default pipeline unchanged too)."""
    import sys

    from ppdet_htc.data.transforms import PadBatch, build_transforms
    from ppdet_htc.engine.export import infer_cfg_dict

    sys.path.insert(0, DEPLOY)
    try:
        import infer as deploy_infer
    finally:
        sys.path.remove(DEPLOY)
    if mmdet:
        resize = {"target_size": [800, 1333], "keep_ratio": True, "interp": 1, "scale_from_size": True}
        norm = {"is_scale": False, "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
                "float32_arithmetic": True}
    else:
        resize = {"target_size": [800, 1333], "keep_ratio": True, "interp": 1}
        norm = {"is_scale": True, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    sample_ops = [{"Decode": {}}, {"Resize": resize}, {"NormalizeImage": norm}, {"Permute": {}}]
    cfg = {"architecture": "HybridTaskCascade",
           "TestReader": {"sample_transforms": sample_ops, "batch_transforms": [{"PadBatch": {"pad_to_stride": 32}}]}}
    steps = infer_cfg_dict(cfg, ["a"], [1])["Preprocess"]
    assert ("scale_from_size" in steps[0]) == mmdet and ("float32_arithmetic" in steps[1]) == mmdet
    path = str(tmp_path / "im.png")
    cv2.imwrite(path, np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    image, im_shape, scale = deploy_infer.Preprocess(steps)(deploy_infer.decode_image(path))
    sample = {"im_file": path}
    for op in build_transforms(sample_ops):
        sample = op(sample)
    (sample,) = PadBatch(32)([sample])
    np.testing.assert_array_equal(image, sample["image"])
    np.testing.assert_array_equal(im_shape, sample["im_shape"])
    np.testing.assert_array_equal(scale, sample["scale_factor"])
    assert image.shape == (3, 800, 1088) and (im_shape[1] == 1067) == mmdet
