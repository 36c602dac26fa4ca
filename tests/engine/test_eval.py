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


def test_fast_runtime_with_reader_workers_keeps_the_exact_metrics(same_size_set, tmp_path):
    """The default fast runtime with a reader worker process gives the exact path's AP (within 0.1 points) and
    reports where the time went (model vs waiting for the reader)."""
    exact = evaluate(demo_eval_cfg(same_size_set, 1), output_eval=str(tmp_path / "exact"), progress=False, exact=True)
    cfg = load_config(coco_config(same_size_set), ["worker_num=1"])
    fast = evaluate(cfg, output_eval=str(tmp_path / "fast"), progress=False)
    assert exact["timing"]["runtime"] == "exact" and fast["timing"]["runtime"] == "onednn"
    assert fast["timing"]["reader_workers"] == 1
    for t in ("bbox", "segm"):
        assert abs(exact[t]["AP"] - fast[t]["AP"]) <= 0.001, (t, exact[t]["AP"], fast[t]["AP"])
    timing = fast["timing"]
    assert timing["model_s"] > 0 and 0 <= timing["reader_wait_s"] < timing["total_s"]
