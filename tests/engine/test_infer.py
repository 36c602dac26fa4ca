"""scripts/infer.py: class names without any dataset, results.json image ids from the annotation file, images
loaded by worker processes; under faults: inputs are never overwritten, one bad image does not lose the others."""
import hashlib
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
from ppdet_htc.engine.infer import picture_paths, run_inference
from ppdet_htc.engine.model_builder import build_model
from ppdet_htc.engine.predictor import Detector
from tests.engine.test_export import _images

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "fixtures", "htc_tiny.yml")


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


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import paddle

    paddle.seed(1)
    path = str(tmp_path_factory.mktemp("w") / "tiny.pdparams")
    save_state_file(path, build_model(load_config(TINY)).state_dict())
    return path


def make_images(folder, n=4):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = cv2.resize(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8), (160, 128))
        cv2.circle(img, (80, 64), 30, (250, 30, 30), -1)
        p = os.path.join(folder, "img{}.png".format(i))
        cv2.imwrite(p, img)
        paths.append(p)
    return paths


def digests(folder):
    return {f: hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest() for f in sorted(os.listdir(folder))}


def run(args, weights):
    return infer_main(args + ["-c", TINY, "-o", "weights=" + weights, "TestDataset.anno_path=null",
                              "BBoxPostProcess.nms.score_threshold=0.05"])


@pytest.fixture
def log_lines():
    """Messages of the ppdet_htc loggers (the CLI's own handlers keep them from pytest's caplog)."""
    import logging

    lines = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("ppdet_htc").addHandler(handler)
    yield lines
    logging.getLogger("ppdet_htc").removeHandler(handler)


def error_lines(capsys):
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("how", ["same", "trailing_slash", "dotdot", "symlink"])
def test_output_dir_equal_to_input_dir_keeps_the_inputs(tmp_path, weights, how, log_lines):
    src = str(tmp_path / "imgs")
    make_images(src, n=2)
    before = digests(src)
    out = {"same": src, "trailing_slash": src + "/", "dotdot": os.path.join(src, "..", "imgs"),
           "symlink": str(tmp_path / "link")}[how]
    if how == "symlink":
        os.symlink(src, out)
    run(["--infer_dir", src, "--output_dir", out], weights)
    log = "\n".join(log_lines)
    after = digests(src)
    for name, digest in before.items():
        assert after[name] == digest, name  # not one input byte changed
    assert {"img0_det.png", "img1_det.png", "results.json"} <= set(after)  # pictures under another name
    assert "img0.png -> img0_det.png" in log and "would replace 2 input image" in log  # and it says so
    records = json.load(open(os.path.join(src, "results.json")))
    assert {r["file_name"] for r in records} == {"img0.png", "img1.png"}


def test_renamed_pictures_never_replace_other_files(tmp_path):
    src = str(tmp_path / "d")
    paths = make_images(src, n=2)
    open(os.path.join(src, "img0_det.png"), "wb").write(b"a user's file, not an input of this run")
    other = str(tmp_path / "other")
    os.makedirs(other)
    twin = os.path.join(other, "img1.png")  # same name as an input of another folder
    open(twin, "wb").write(open(paths[1], "rb").read())
    out, renamed = picture_paths([paths[0], paths[1], twin], src)
    assert [os.path.basename(p) for p in out] == ["img0_det2.png", "img1_det.png", "img1_det2.png"]
    assert len(renamed) == 3
    out, renamed = picture_paths(paths + [twin], str(tmp_path / "elsewhere"))
    assert [os.path.basename(p) for p in out] == ["img0.png", "img1.png", "img1_det.png"] and len(renamed) == 1
    # an input-folder sub-directory as output does not clash with anything
    out, renamed = picture_paths(paths, os.path.join(src, "vis"))
    assert [os.path.basename(p) for p in out] == ["img0.png", "img1.png"] and not renamed


@pytest.mark.parametrize("workers", ["0", "2"])
def test_corrupt_images_do_not_lose_the_folder(tmp_path, weights, capsys, workers):
    """Also when worker processes decode the images (the unreadable ones are reported from there)."""
    src = str(tmp_path / "imgs")
    make_images(src, n=6)
    with open(os.path.join(src, "img1.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n this is not an image")
    open(os.path.join(src, "img3.png"), "wb").close()  # empty file
    for name in ("img4.png", "img5.png"):  # a batch of only unreadable images
        open(os.path.join(src, name), "wb").write(b"nope")
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as e:
        run(["--infer_dir", src, "--output_dir", out, "--batch_size", "2", "--worker_num", workers], weights)
    assert e.value.code == 2
    (line,) = error_lines(capsys)
    assert "4 of 6 images" in line and all("img{}.png".format(i) in line for i in (1, 3, 4, 5))
    assert "results.json" in line
    assert "img0.png" not in line
    # The readable images have their pictures and their results.
    assert sorted(os.listdir(out)) == ["img0.png", "img2.png", "results.json"]
    records = json.load(open(os.path.join(out, "results.json")))
    assert {r["file_name"] for r in records} == {"img0.png", "img2.png"}


@pytest.mark.parametrize("workers", ["0", "2"])
def test_strict_stops_at_the_first_bad_image(tmp_path, weights, capsys, workers):
    src = str(tmp_path / "imgs")
    make_images(src, n=3)
    with open(os.path.join(src, "img1.png"), "wb") as f:
        f.write(b"garbage")
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as e:
        run(["--infer_dir", src, "--output_dir", out, "--strict", "--worker_num", workers], weights)
    assert e.value.code == 2
    (line,) = error_lines(capsys)
    assert "img1.png" in line and "decode" in line
    assert not os.path.exists(os.path.join(out, "results.json"))  # stopped: no results file claims completeness
    assert not os.path.exists(os.path.join(out, "img2.png"))


def test_files_of_one_name_in_two_folders_get_distinct_image_ids(tmp_path, weights):
    """Ids from an annotation file are matched by file name; a second file of that name must not share the id."""
    from ppdet_htc.engine.infer import run_inference
    from ppdet_htc.engine.predictor import Detector

    a = make_images(str(tmp_path / "a"), 1)[0]
    b = make_images(str(tmp_path / "b"), 1)[0]
    assert os.path.basename(a) == os.path.basename(b) == "img0.png"
    det = Detector(TINY, weights=weights, overrides=["TestDataset.anno_path=null"])
    path, dets = run_inference(det, [a, b], str(tmp_path / "out"), save_images=False, image_ids={"img0.png": 7})
    assert [d["im_id"] for d in dets] == [7, 8]


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
