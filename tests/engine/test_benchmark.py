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
    res = benchmark_inference(load_config(TINY), image_size=(160, 224), iters=2, warmup=1, num_dets=20)
    for key in ("device", "paddle_version", "image_size", "batch_size", "latency_ms", "images_per_s",
                "peak_rss_mb", "gflops", "phases_ms", "overhead_fraction"):
        assert key in res
    assert res["detections_per_image"] == 20  # forced detection count with random weights
    lat = res["latency_ms"]
    assert lat["min"] <= lat["median"] <= lat["max"]
    assert 0.0 < res["overhead_fraction"] < 1.0 and res["gflops"] > 0
    for name in ("preprocess", "backbone_fpn", "rpn", "box_stage0", "box_stage2", "mask_stage0", "mask_stage2",
                 "mask_paste", "to_coco_results"):
        assert name in res["phases_ms"], name
    # Phases partition the iteration: their sum is close to the median latency.
    assert sum(res["phases_ms"].values()) == pytest.approx(lat["median"], rel=0.25)


def test_benchmark_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    benchmark_main(["-c", TINY, "--image_size", "128", "160", "--iters", "1", "--warmup", "1", "--num_dets", "10",
                    "--train", "--train_iters", "1", "--train_batch_size", "1", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["training"]["train_images_per_s"] > 0
    assert set(data["latency_ms"]) == {"median", "min", "max"}
    assert "overhead" in capsys.readouterr().out


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
