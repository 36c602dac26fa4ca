"""scripts/infer.py under faults: inputs are never overwritten, one bad image does not lose the others."""
import hashlib
import json
import os

import cv2
import numpy as np
import pytest

from ppdet_htc.cli import infer_main
from ppdet_htc.core import load_config
from ppdet_htc.engine.checkpoint import save_state_file
from ppdet_htc.engine.infer import picture_paths
from ppdet_htc.engine.model_builder import build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "fixtures", "htc_tiny.yml")


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


def test_corrupt_images_do_not_lose_the_folder(tmp_path, weights, capsys):
    src = str(tmp_path / "imgs")
    make_images(src, n=4)
    with open(os.path.join(src, "img1.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n this is not an image")
    open(os.path.join(src, "img3.png"), "wb").close()  # empty file
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as e:
        run(["--infer_dir", src, "--output_dir", out, "--batch_size", "2"], weights)
    assert e.value.code == 2
    (line,) = error_lines(capsys)
    assert "2 of 4 images" in line and "img1.png" in line and "img3.png" in line and "results.json" in line
    assert "img0.png" not in line
    # The readable images have their pictures and their results.
    assert sorted(os.listdir(out)) == ["img0.png", "img2.png", "results.json"]
    records = json.load(open(os.path.join(out, "results.json")))
    assert {r["file_name"] for r in records} == {"img0.png", "img2.png"}


def test_strict_stops_at_the_first_bad_image(tmp_path, weights, capsys):
    src = str(tmp_path / "imgs")
    make_images(src, n=3)
    with open(os.path.join(src, "img1.png"), "wb") as f:
        f.write(b"garbage")
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as e:
        run(["--infer_dir", src, "--output_dir", out, "--strict"], weights)
    assert e.value.code == 2
    (line,) = error_lines(capsys)
    assert "img1.png" in line and "decode" in line
    assert not os.path.exists(os.path.join(out, "results.json"))  # stopped: no results file claims completeness
    assert not os.path.exists(os.path.join(out, "img2.png"))
