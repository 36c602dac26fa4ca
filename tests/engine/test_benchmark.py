"""The benchmark reports consistent, measured numbers (tiny model, small image, 2 iterations)."""
import json
import os

import pytest

from ppdet_htc.cli import benchmark_main
from ppdet_htc.core import load_config
from ppdet_htc.engine.benchmark import benchmark_inference
from ppdet_htc.utils.timing import PhaseTimer, phase

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "fixtures", "htc_tiny.yml")


def test_phase_timer_attributes_nested_time_to_the_innermost_phase():
    import time

    with PhaseTimer(sync=False) as t:
        with phase("outer"):
            time.sleep(0.02)
            with phase("inner"):
                time.sleep(0.03)
    assert t.times["inner"] == pytest.approx(0.03, abs=0.015)
    assert t.times["outer"] == pytest.approx(0.02, abs=0.015)
    with phase("ignored"):  # no timer active: a no-op
        pass


def test_benchmark_inference_report_is_consistent():
    res = benchmark_inference(load_config(TINY), image_size=(160, 224), iters=2, warmup=1, num_dets=20,
                              runtime="exact", peak=False)
    for key in ("device", "paddle_version", "image_size", "batch_size", "latency_ms", "images_per_s",
                "peak_rss_mb", "gflops", "phases_ms", "overhead_fraction", "cpu", "cpu_flags", "threads",
                "phase_kernels", "phase_gflops", "phase_conv_gflops_per_s", "cpu_seconds_per_image"):
        assert key in res
    assert res["runtime"] == "exact" and res["threads"] >= 1
    assert res["detections_per_image"] == 20  # forced detection count with random weights
    lat = res["latency_ms"]
    assert lat["min"] <= lat["median"] <= lat["max"]
    assert 0.0 < res["overhead_fraction"] < 1.0 and res["gflops"] > 0
    for name in ("preprocess", "backbone_fpn", "rpn", "box_stage0", "box_stage2", "mask_stage0", "mask_stage2",
                 "mask_paste", "to_coco_results"):
        assert name in res["phases_ms"], name
    # Phases partition the iteration: their sum is close to the median latency.
    assert sum(res["phases_ms"].values()) == pytest.approx(lat["median"], rel=0.25)
    # FLOPs per phase add up to the model's; conv phases ran MKL-backed native kernels.
    assert sum(res["phase_gflops"].values()) == pytest.approx(res["gflops"], rel=1e-6)
    assert "MKL" in res["phase_kernels"]["backbone_fpn"] and res["phase_conv_gflops_per_s"]["backbone_fpn"] > 0


def test_benchmark_onednn_runtime_measures_the_limit_and_the_fraction_of_it():
    res = benchmark_inference(load_config(TINY), image_size=(128, 160), iters=1, warmup=1, num_dets=10,
                              runtime="onednn", peak=True)
    assert res["runtime"] == "onednn" and res["detections_per_image"] == 10  # forced detections survive export
    model_phase = [k for k in res["phases_ms"] if k.startswith("model (")]
    assert model_phase == ["model (Paddle Inference + oneDNN)"]
    rates = res["peak_rates"]
    for key in ("numpy_sgemm", "paddle_matmul", "paddle_conv2d", "onednn_sgemm", "onednn_conv2d"):
        assert rates[key]["gflops_per_s"] > 0, key
    assert rates["attainable"]["gflops_per_s"] == max(v["gflops_per_s"] for k, v in rates.items() if k != "attainable")
    assert res["fraction_of_attainable"] == pytest.approx(
        res["achieved_gflops_per_s"] / rates["attainable"]["gflops_per_s"])
    assert res["overhead_fraction"] is None  # not measurable inside a Paddle Inference program


def test_benchmark_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    benchmark_main(["-c", TINY, "--image_size", "128", "160", "--iters", "1", "--warmup", "1", "--num_dets", "10",
                    "--runtime", "exact", "--train", "--train_iters", "1", "--train_batch_size", "1", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["training"]["train_images_per_s"] > 0
    assert set(data["latency_ms"]) == {"median", "min", "max"}
    out = capsys.readouterr().out
    assert "overhead" in out and "attainable FP32 rate" in out and "training phases" in out
    phases = data["training"]["phases_ms"]
    for name in ("data (synthetic batch)", "backbone_fpn", "rpn", "target_assign", "box_heads", "mask_targets",
                 "mask_heads", "backward", "optimizer"):
        assert phases.get(name, 0) > 0, name
    assert data["training"]["missing_hooks"] == []
    # The phases partition the step: they add up to about the median iteration time.
    assert sum(phases.values()) / 1000 == pytest.approx(data["training"]["seconds_per_iter"]["median"], rel=0.3)


def test_benchmark_training_with_semantic_head_uses_random_semantic_labels():
    from ppdet_htc.core import merge_config
    from ppdet_htc.engine.benchmark import _synthetic_train_batch, benchmark_training

    cfg = load_config(TINY)
    merge_config(cfg, {"HybridTaskCascade": {"fused_semantic_head": "FusedSemanticHead"},
                       "FusedSemanticHead": {"semantic_num_class": 7}})
    batch = _synthetic_train_batch(1, (128, 160), 5, semantic_classes=7)
    sem = batch["semantic"].numpy()
    assert sem.shape == (1, 1, 128 // 8, 160 // 8) and sem.min() >= 0 and sem.max() < 7
    res = benchmark_training(cfg, image_size=(128, 160), batch_size=1, iters=1, warmup=1)
    assert res["train_images_per_s"] > 0 and res["seconds_per_iter"]["median"] > 0


def test_compare_latency_runs_old_new_new_old(tmp_path):
    """scripts/compare_latency.py: interleaved runs of an older commit and this checkout, and their ratio."""
    import subprocess
    import sys

    if subprocess.run(["git", "-C", REPO, "cat-file", "-e", "3a6a67c^{commit}"], capture_output=True).returncode:
        pytest.skip("the reference commit is not in this clone")
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    try:
        import compare_latency
    finally:
        sys.path.pop(0)
    out = tmp_path / "cmp.json"
    code = compare_latency.main(["--old", "3a6a67c", "--target", "1000", "--json", str(out), "--new_args=--no_peak",
                                 "--", "-c", TINY, "--image_size", "96", "128", "--iters", "1", "--warmup", "1",
                                 "--num_dets", "5"])
    data = json.loads(out.read_text())
    assert code == 0 and len(data["runs_ms"]["old"]) == len(data["runs_ms"]["new"]) == 2
    assert data["ratio"] > 0 and data["new_args"][-1] == "--no_peak"


@pytest.mark.parametrize("config", ["htc_tiny.yml", "htc_tiny_mmdet.yml"])
def test_forced_detections_give_one_nms_candidate_per_roi(config):
    """Random weights with peaked scores: for PaddleDetection's MultiClassNMS (threshold 0.05) and mmdetection's
    BatchedNMS (0.001, here with only 5 classes) every RoI passes the NMS score threshold in exactly one class."""
    import numpy as np
    import paddle

    from ppdet_htc.engine.benchmark import _force_detections
    from ppdet_htc.engine.model_builder import build_model

    model = build_model(load_config(os.path.join(os.path.dirname(TINY), config)))
    model.eval()
    _force_detections(model, 10)
    nms = model.bbox_post_process.nms
    seen = []

    class Capture(object):
        def __getattr__(self, name):
            return getattr(nms, name)

        def __call__(self, boxes, scores, rois_num, **kwargs):
            seen.append(scores.numpy())
            return nms(boxes, scores, rois_num, **kwargs)

    model.bbox_post_process.nms = Capture()
    inputs = {"image": paddle.to_tensor(np.random.default_rng(0).normal(size=(1, 3, 128, 160)).astype("float32")),
              "im_shape": paddle.to_tensor([[128.0, 160.0]]), "scale_factor": paddle.to_tensor([[1.0, 1.0]])}
    with paddle.no_grad():
        out = model(inputs)
    (scores,) = seen
    assert len(scores) >= 10 and ((scores > nms.score_threshold).sum(axis=1) == 1).all()
    assert int(out["bbox_num"][0]) == 10


@pytest.mark.parametrize("runtime", ["exact", "onednn"])
def test_benchmark_of_the_mmdetection_convention(runtime):
    """On Paddle 2.x the exported mmdetection convention is refused and the benchmark times the dynamic graph."""
    import paddle

    res = benchmark_inference(load_config(os.path.join(os.path.dirname(TINY), "htc_tiny_mmdet.yml")),
                              image_size=(128, 160), iters=1, warmup=1, num_dets=10, runtime=runtime, peak=False)
    paddle2 = int(paddle.__version__.split(".")[0]) < 3 and not paddle.__version__.startswith("0.")
    assert res["runtime"] == ("dynamic" if paddle2 and runtime == "onednn" else runtime)
    assert res["detections_per_image"] == 10
    if res["runtime"] in ("exact", "dynamic"):
        assert 0.0 < res["overhead_fraction"] < 1.0  # conv/matmul layers timed (also after a fallback)
