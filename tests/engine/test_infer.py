"""scripts/infer.py: class names without any dataset, results.json image ids from the annotation file, images
loaded by worker processes."""
import json
import os
import shutil

import cv2
import numpy as np
import paddle
import pytest

from ppdet_htc.cli import infer_main
from ppdet_htc.core import load_config
from ppdet_htc.data.demo_shapes import CATEGORIES, generate_demo_dataset
from ppdet_htc.engine.checkpoint import save_state_file
from ppdet_htc.engine.infer import run_inference
from ppdet_htc.engine.model_builder import build_model
from ppdet_htc.engine.predictor import Detector
from tests.engine.test_export import TINY, _images

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _photo(path):
    """A user's own picture: not part of any dataset."""
    im = np.full((180, 240, 3), (90, 110, 70), np.uint8)
    cv2.circle(im, (80, 90), 40, (250, 200, 40), -1)
    cv2.rectangle(im, (150, 40), (220, 120), (40, 60, 230), -1)
    cv2.imwrite(str(path), im)
    return str(path)


def test_inference_with_the_demo_config_creates_no_dataset(tmp_path, monkeypatch):
    """From another directory, by packaged config name: the 4 class names come from the config; the
    660-image demo set is neither generated nor read (generation would raise here)."""
    import ppdet_htc.data.demo_dataset as demo_dataset
    import ppdet_htc.data.demo_shapes as demo_shapes

    def no_generation(*args, **kwargs):
        raise AssertionError("inference must not generate the demo dataset")

    monkeypatch.setattr(demo_dataset, "ensure_demo_dataset", no_generation)
    monkeypatch.setattr(demo_shapes, "_regenerate", no_generation)
    monkeypatch.setenv("PPDET_HTC_DEMO_DIR", str(tmp_path / "demo_root"))
    monkeypatch.chdir(tmp_path)
    photo = _photo(tmp_path / "photo.jpg")
    path = infer_main(["-c", "configs/demo/htc_r18_demo_shapes.yml", "--infer_img", photo, "--output_dir", "out"])
    records = json.load(open(path))
    assert records and {r["category_id"] for r in records} <= {c["id"] for c in CATEGORIES}
    assert all(r["image_id"] == 0 and r["file_name"] == "photo.jpg" for r in records)
    assert os.path.isfile(tmp_path / "out" / "photo.jpg")
    assert not os.path.exists(tmp_path / "demo_root") and not os.path.exists(tmp_path / "dataset")
    assert sorted(os.listdir(tmp_path)) == ["out", "photo.jpg"]


def test_demo_label_list_matches_the_generator():
    from ppdet_htc.core import load_config

    cfg = load_config(os.path.join(REPO, "configs", "demo", "htc_r18_demo_shapes.yml"))
    assert cfg.label_list == [c["name"] for c in CATEGORIES] and cfg.num_classes == len(CATEGORIES)


def test_results_use_the_annotation_files_image_ids(tmp_path):
    root = str(tmp_path / "shapes")
    generate_demo_dataset(root, num_train=1, num_val=3, seed=5, progress=False)
    anno = json.load(open(os.path.join(root, "annotations", "instances_val.json")))
    # Make the ids unlike 0..N-1 so that a match by position could not pass.
    new_ids = {im["id"]: 100 + 7 * im["id"] for im in anno["images"]}
    for im in anno["images"]:
        im["id"] = new_ids[im["id"]]
    for a in anno["annotations"]:
        a["image_id"] = new_ids[a["image_id"]]
    with open(os.path.join(root, "annotations", "instances_val.json"), "w") as f:
        json.dump(anno, f)
    folder = tmp_path / "images"
    folder.mkdir()
    for im in anno["images"]:
        shutil.copy(os.path.join(root, "val", im["file_name"]), folder / im["file_name"])
    _photo(folder / "zz_extra.jpg")  # not in the annotation file
    cfg = tmp_path / "cfg.yml"
    cfg.write_text("_BASE_: ['{}']\nTestDataset: !COCODataSet {{dataset_dir: {}, image_dir: val, "
                   "anno_path: annotations/instances_val.json}}\n".format(
                       os.path.join(REPO, "configs", "demo", "htc_r18_demo_shapes.yml"), root))
    path = infer_main(["-c", str(cfg), "--infer_dir", str(folder), "--output_dir", str(tmp_path / "out"),
                       "--no_images"])
    records = json.load(open(path))
    by_file = {}
    for r in records:
        by_file.setdefault(r["file_name"], set()).add(r["image_id"])
    expected = {im["file_name"]: {im["id"]} for im in anno["images"]}
    expected["zz_extra.jpg"] = {max(new_ids.values()) + 1}
    assert set(by_file) >= {im["file_name"] for im in anno["images"]}  # the demo model finds shapes in each
    assert by_file == {k: v for k, v in expected.items() if k in by_file}


def test_missing_image_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        infer_main(["-c", os.path.join(REPO, "configs", "demo", "htc_r18_demo_shapes.yml"),
                    "--infer_img", str(tmp_path / "nope.jpg")])
    assert e.value.code == 2


def test_worker_processes_give_the_inline_results(tmp_path):
    """Images decoded by worker processes give the same detections as inline loading."""
    paddle.seed(1)
    weights = str(tmp_path / "tiny.pdparams")
    save_state_file(weights, build_model(load_config(TINY)).state_dict())
    cfg = load_config(TINY, ["BBoxPostProcess.nms.score_threshold=0.18", "TestDataset.anno_path=null"])
    det = Detector(cfg, weights=weights, exact=True)
    images = _images(str(tmp_path))
    p0, dets0 = run_inference(det, images, str(tmp_path / "w0"), batch_size=1, save_images=False, worker_num=0)
    p2, dets2 = run_inference(det, images, str(tmp_path / "w2"), batch_size=1, save_images=True, worker_num=2)
    assert [d["im_id"] for d in dets2] == list(range(len(images)))  # in order
    assert sum(len(d["scores"]) for d in dets0) > 0
    for a, b in zip(dets0, dets2):
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-4)
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-2)
    assert len(json.load(open(p0))) == len(json.load(open(p2)))
    assert (tmp_path / "w2" / "img0.png").is_file()
