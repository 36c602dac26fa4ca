"""Divergence stops training with one line, never by aborting the process inside a fused kernel."""
import os
import subprocess
import sys

import numpy as np
import pytest

from ppdet_htc.data.loader import build_reader
from ppdet_htc.engine.finite_guard import FiniteGuard, NonFiniteValues
from ppdet_htc.engine.model_builder import build_model
from tests.engine.test_train import REPO, TINY, make_cfg, train_overrides


@pytest.fixture(scope="module")
def model_and_batch(shapes_root):
    cfg = make_cfg(shapes_root, "unused")
    model = build_model(cfg)
    model.train()
    batch = next(iter(build_reader(cfg, "train", rank=0, world_size=1)))
    return model, batch


@pytest.mark.parametrize("layer", ["rpn_head.rpn_rois_delta", "rpn_head.rpn_rois_score", "bbox_head.bbox_delta_stage0",
                                   "bbox_head.bbox_delta_stage2"])
def test_guard_stops_before_boxes_reach_the_kernels(model_and_batch, layer):
    model, batch = model_and_batch
    weight = dict(model.named_sublayers())[layer].weight
    saved = weight.numpy().copy()
    guard = FiniteGuard(model)
    try:
        model(batch)  # healthy weights: no stop
        poisoned = saved.copy()
        poisoned.flat[::7] = np.inf
        weight.set_value(poisoned)
        with pytest.raises(NonFiniteValues) as e:
            model(batch)
        assert e.value.where == layer
    finally:
        weight.set_value(saved)
        guard.remove()
    assert not guard._handles


def _train(cfg_path, out, *opts):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "train.py"), "-c", str(cfg_path),
                           "--output_dir", str(out), "-o"] + list(opts), capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.mark.parametrize("clip", [False, True])
def test_learning_rate_1e8_is_a_one_line_stop_through_the_cli(shapes_root, tmp_path, clip):
    """lr 1e8 without warm-up used to abort the process (SIGABRT in Paddle's roi_align on NaN boxes)."""
    import yaml

    opts = dict(train_overrides(shapes_root), LearningRate={"base_lr": 0.01, "schedulers": []})
    cfg = tmp_path / "cfg.yml"
    text = "_BASE_: ['{}']\n".format(TINY) + yaml.safe_dump(opts)
    cfg.write_text(text.replace("schedulers: []", "schedulers: [!PiecewiseDecay {milestones: [8, 11]}]"))
    out = tmp_path / "out"
    extra = ["OptimizerBuilder.clip_grad_by_norm=35"] if clip else []
    res = _train(cfg, out, "LearningRate.base_lr=1e8", *extra)
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr[-3000:]
    line = errors[0]
    assert "non-finite" in line and "iteration" in line and "1e+08" in line and "Traceback" not in res.stderr
    if clip:
        assert "gradient clipping is already on" in line and "enable gradient clipping" not in line
    else:
        assert "enable gradient clipping" in line and "clip_grad_by_norm" in line
    log = open(out / "train.log").read()
    assert line[len("error: "):] in log  # the stop is in the training log too
