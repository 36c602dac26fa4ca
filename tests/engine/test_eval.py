"""scripts/eval.py behaviour: json_eval equality, batch-size invariance, and clear errors on bad input."""
import json
import os
import re

import pytest

from ppdet_htc.cli import eval_main
from ppdet_htc.core import ConfigError, load_config
from ppdet_htc.data.demo_shapes import generate_demo_dataset
from ppdet_htc.engine.evaluator import evaluate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "demo", "htc_r18_demo_shapes.yml")


@pytest.fixture(scope="module")
def same_size_set(tmp_path_factory):
    """Eight 320x320 demo-style images (same size, so batching adds no padding)."""
    root = str(tmp_path_factory.mktemp("samesize") / "shapes")
    generate_demo_dataset(root, num_train=1, num_val=8, seed=11, min_size=320, max_size=320, progress=False)
    return root


def coco_config(root):
    """The demo model evaluated on another COCO-format set (a plain !COCODataSet replaces the demo's)."""
    path = os.path.join(root, "eval_cfg.yml")
    with open(path, "w") as f:
        f.write("_BASE_: ['{}']\nEvalDataset: !COCODataSet {{dataset_dir: {}, image_dir: val, "
                "anno_path: annotations/instances_val.json}}\n".format(DEMO, root))
    return path


def demo_eval_cfg(root, batch_size):
    return load_config(coco_config(root), ["worker_num=0", "EvalReader.batch_size={}".format(batch_size)])


def test_batch_sizes_1_and_2_give_identical_metrics_on_equal_sizes(same_size_set, tmp_path):
    m1 = evaluate(demo_eval_cfg(same_size_set, 1), output_eval=str(tmp_path / "b1"), progress=False)
    m2 = evaluate(demo_eval_cfg(same_size_set, 2), output_eval=str(tmp_path / "b2"), progress=False)
    assert m1["bbox"]["AP"] > 0.3  # the shipped demo model, not an empty comparison
    for t in ("bbox", "segm"):
        assert m1[t] == m2[t]


def test_json_eval_reproduces_in_process_metrics(same_size_set, tmp_path, capsys):
    out = str(tmp_path / "ev")
    cfg = coco_config(same_size_set)
    live = eval_main(["-c", cfg, "--output_eval", out, "-o", "worker_num=0"])
    for name in ("bbox.json", "mask.json", "metrics.json"):
        assert os.path.isfile(os.path.join(out, name))
    again = eval_main(["-c", cfg, "--output_eval", out, "--json_eval"])
    for t in ("bbox", "segm"):
        assert again[t] == live[t]
    assert json.load(open(os.path.join(out, "metrics.json")))["segm"] == live["segm"]
    assert "per-category" not in capsys.readouterr().out
    classwise = eval_main(["-c", cfg, "--output_eval", out, "--json_eval", "--classwise"])
    assert set(classwise["bbox_classwise"]) == {"ellipse", "quad", "triangle", "pentagon"}


def test_demo_batch_2_keeps_the_metrics(tmp_path):
    """The demo's images have many sizes. The eval reader batches only images that share a padded canvas
    (group_by_size), so batch size 2 gives the single-image results (at most 0.1 AP may move; none does)."""
    from ppdet_htc.data.loader import build_reader
    from ppdet_htc.engine.evaluator import build_eval_dataset

    cfg2 = load_config(DEMO, ["worker_num=0", "EvalReader.batch_size=2"])
    reader = build_reader(cfg2, "eval", dataset=build_eval_dataset(cfg2), rank=0, world_size=1)
    assert sum(len(b) == 2 for b in reader.batch_indices()) >= 20  # real two-image batches
    m1 = evaluate(load_config(DEMO, ["worker_num=0"]), output_eval=str(tmp_path / "1"), progress=False)
    m2 = evaluate(cfg2, output_eval=str(tmp_path / "2"), progress=False)
    for t in ("bbox", "segm"):
        assert abs(m1[t]["AP"] - m2[t]["AP"]) <= 0.001, (t, m1[t]["AP"], m2[t]["AP"])
        assert m1[t] == m2[t]


def test_bad_inputs_are_named(same_size_set, tmp_path):
    with pytest.raises(SystemExit) as e:  # a missing dataset: one clear line, exit code 2
        eval_main(["-c", coco_config(str(tmp_path)), "-o", "EvalDataset.dataset_dir=" + str(tmp_path / "nowhere")])
    assert e.value.code == 2
    # A corrupt image is an error naming the file, not a skipped image.
    import shutil

    root = str(tmp_path / "copy")
    shutil.copytree(same_size_set, root, ignore=shutil.ignore_patterns("*.yml"))
    victim = os.path.join(root, "val", sorted(os.listdir(os.path.join(root, "val")))[3])
    with open(victim, "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(Exception) as e:
        evaluate(demo_eval_cfg(root, 1), output_eval=str(tmp_path / "x"), progress=False)
    assert os.path.basename(victim) in str(e.value)
    os.remove(victim)
    with pytest.raises(FileNotFoundError) as e:
        evaluate(demo_eval_cfg(root, 1), output_eval=str(tmp_path / "y"), progress=False)
    assert os.path.basename(victim) in str(e.value)
    with pytest.raises(ConfigError, match="batch_size"):  # a misspelt reader key names the valid one
        evaluate(load_config(DEMO, ["EvalReader.batch_sise=2"]), progress=False)


def test_eval_with_redirected_output_shows_periodic_progress_and_writes_to_output(same_size_set, tmp_path):
    """As under CI, nohup or `| tee`: stdout is a file. Progress comes as timed lines with an ETA (not one line
    per image, not nothing), results land in output/<config name>/ of the working directory, plots with
    --plot, and Paddle's ccache warning is not shown."""
    import subprocess
    import sys

    cfg = coco_config(same_size_set)
    env = dict(os.environ, PPDET_HTC_PROGRESS_INTERVAL="0.3", PYTHONPATH=REPO)
    env.pop("PPDET_HTC_DEBUG", None)
    env.pop("PPDET_HTC_PROGRESS", None)
    with open(tmp_path / "stdout.txt", "w") as out, open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "eval.py"), "-c", cfg, "--plot",
                               "-o", "worker_num=0"], cwd=str(tmp_path), stdout=out, stderr=err, env=env,
                              timeout=600)
    stdout, stderr = (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 0, stderr[-3000:]
    lines = [ln for ln in stdout.splitlines() if "eval: " in ln and " img " in ln]
    periodic = [ln for ln in lines if "ETA" in ln]
    assert periodic, stdout[-3000:]
    assert len(lines) < 8 + 2  # timed lines, not one per image (8 images)
    assert all(re.search(r"eval: \d+/8 img \(\d+%\) \| [\d.]+ img/s \| elapsed [\d:]+ \| ETA [\d:?]+", ln)
               for ln in periodic), periodic
    assert any("eval: done, 8/8 img" in ln for ln in lines)
    assert "%|" not in stderr  # no tqdm bar frames in a file
    assert "ccache" not in stderr + stdout
    out_dir = tmp_path / "output" / "eval_cfg"
    for name in ("bbox.json", "mask.json", "metrics.json"):
        assert (out_dir / name).is_file()
    assert not (tmp_path / "bbox.json").exists()
    for name in ("pr_curves_bbox.png", "pr_curves_segm.png", "error_breakdown_bbox.png", "confusion_matrix.png"):
        data = (out_dir / "plots" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def _copy_set(src, dst):
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.yml"))
    return dst


def _edit_annotations(root, edit):
    path = os.path.join(root, "annotations", "instances_val.json")
    data = json.load(open(path))
    edit(data)
    json.dump(data, open(path, "w"))


def test_degenerate_ground_truth_evaluates_to_the_end(same_size_set, tmp_path, capsys):
    """Polygons pycocotools cannot rasterise used to crash COCOeval after the full inference pass."""
    root = _copy_set(same_size_set, str(tmp_path / "degenerate"))

    def add_degenerate(data):
        anns = data["annotations"]
        next_id = max(a["id"] for a in anns) + 1
        first = anns[0]
        for k, segm in enumerate(([[10, 10, 40, 40]], [], [[]], [[5, 5]])):  # < 3 points, empty
            anns.append(dict(first, id=next_id + k, segmentation=segm))
        anns[1].pop("area")
        anns[2].pop("iscrowd")

    _edit_annotations(root, add_degenerate)
    clean = evaluate(demo_eval_cfg(same_size_set, 2), output_eval=str(tmp_path / "clean"), progress=False)
    out = str(tmp_path / "ev")
    metrics = eval_main(["-c", coco_config(root), "--output_eval", out, "-o", "worker_num=0",
                         "EvalReader.batch_size=2"])
    assert metrics["segm"] == clean["segm"]  # degenerate polygons dropped, missing fields filled in
    assert 0 < metrics["bbox"]["AP"] <= clean["bbox"]["AP"]  # their boxes are real objects for the box AP
    assert json.load(open(os.path.join(out, "metrics.json")))["segm"] == clean["segm"]


def test_unreadable_ground_truth_stops_before_the_model_runs(same_size_set, tmp_path, monkeypatch, capsys):
    root = _copy_set(same_size_set, str(tmp_path / "strings"))

    def string_category_ids(data):  # the loader maps them; COCOeval needs integers
        for c in data["categories"]:
            c["id"] = str(c["id"])
        for a in data["annotations"]:
            a["category_id"] = str(a["category_id"])

    _edit_annotations(root, string_category_ids)
    import ppdet_htc.engine.evaluator as evaluator_module

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built although the ground truth is unusable")

    monkeypatch.setattr(evaluator_module, "build_model", no_model)
    with pytest.raises(SystemExit) as e:
        eval_main(["-c", coco_config(root), "-o", "worker_num=0"])
    assert e.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "instances_val.json" in line and "category id '1' must be an integer" in line


def test_unavailable_weights_are_reported_first_saying_where_to_put_them(tmp_path, capsys, monkeypatch):
    """Offline: a model-zoo name that cannot be downloaded is one line naming the cache file to place by hand,
    before any dataset problem (here: no COCO at all) and before the model is built."""
    import socket

    from ppdet_htc.engine import evaluator

    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv("PPDET_HTC_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(evaluator, "build_model", lambda cfg: pytest.fail("the model must not be built"))
    name = "mmdet_htc_x101_64x4d_fpn_dconv_c3-c5_mstrain_400_1400_16x1_20e_coco"
    with pytest.raises(SystemExit) as e:
        eval_main(["-c", "configs/htc_mmdet/{}.yml".format(name[len("mmdet_"):]), "-o", "weights=" + name,
                   "EvalDataset.dataset_dir=" + str(tmp_path / "no_coco")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "place it by hand at" in err[0] and str(tmp_path / "home") in err[0]
    assert "annotation" not in err[0]


def test_fast_runtime_with_reader_workers_keeps_the_exact_metrics(same_size_set, tmp_path, monkeypatch):
    """The default fast runtime with a reader worker process gives the exact path's AP (within 0.1 points) and
    reports where the time went (model vs waiting for the reader)."""
    monkeypatch.delenv("PPDET_HTC_RUNTIME", raising=False)
    monkeypatch.delenv("PPDET_HTC_EXACT", raising=False)
    exact = evaluate(demo_eval_cfg(same_size_set, 1), output_eval=str(tmp_path / "exact"), progress=False, exact=True)
    cfg = load_config(coco_config(same_size_set), ["worker_num=1"])
    fast = evaluate(cfg, output_eval=str(tmp_path / "fast"), progress=False)
    assert exact["timing"]["runtime"] == "exact" and fast["timing"]["runtime"] == "onednn"
    assert fast["timing"]["reader_workers"] == 1
    for t in ("bbox", "segm"):
        assert abs(exact[t]["AP"] - fast[t]["AP"]) <= 0.001, (t, exact[t]["AP"], fast[t]["AP"])
    timing = fast["timing"]
    assert timing["model_s"] > 0 and 0 <= timing["reader_wait_s"] < timing["total_s"]
