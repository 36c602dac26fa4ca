"""Training: exact resume, NaN stop, fine-tuning with other classes, schedules, snapshots, Ctrl-C."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from ppdet_htc.core import load_config
from ppdet_htc.engine.checkpoint import load_state_file, save_state_file
from ppdet_htc.engine.model_builder import build_model
from ppdet_htc.engine.optimizer import LearningRate, LinearWarmup, PiecewiseDecay
from ppdet_htc.engine.trainer import NonFiniteLossError, Trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "fixtures", "htc_tiny.yml")


def train_overrides(root, **extra):
    """The tiny model on the tiny shapes set, 4 classes, batch 2, deterministic reader."""
    opts = {
        "num_classes": 4,
        "worker_num": 0,
        "epoch": 3,
        "log_iter": 1,
        "TrainDataset": {"dataset_dir": root, "image_dir": "train", "anno_path": "annotations/instances_train.json",
                         "data_fields": ["image", "gt_bbox", "gt_class", "gt_poly", "is_crowd"]},
        "TrainReader": {"batch_size": 2, "sample_transforms": [
            {"Decode": {}}, {"Resize": {"target_size": [128, 160], "keep_ratio": True}}, {"RandomFlip": {}},
            {"NormalizeImage": {}}, {"Permute": {}}]},
        "LearningRate": {"base_lr": 0.01},
    }
    opts.update(extra)
    return opts


def make_cfg(root, out, extra=None, semantic=False):
    from ppdet_htc.core import merge_config

    cfg = load_config(TINY)
    merge_config(cfg, train_overrides(root))
    merge_config(cfg, {"save_dir": str(out)})
    if semantic:
        merge_config(cfg, {"HybridTaskCascade": {"fused_semantic_head": "FusedSemanticHead"},
                           "FusedSemanticHead": {"semantic_num_class": 5},
                           "TrainDataset": {"load_semantic": True, "semantic_source": "instances"}})
        cfg["TrainReader"]["batch_transforms"] = [{"PadBatch": {"pad_to_stride": 32}},
                                                  {"SegRescale": {"scale_factor": 0.125}}]
    if extra:
        merge_config(cfg, extra)
    return cfg


def test_resume_continues_with_identical_losses(shapes_root, tmp_path):
    full = Trainer(make_cfg(shapes_root, tmp_path / "a"), max_iters=8, seed=3, progress=False).train()
    assert len(full) == 8
    first = Trainer(make_cfg(shapes_root, tmp_path / "b"), max_iters=5, seed=3, progress=False)
    part1 = first.train()
    last = os.path.join(first.output_dir, "last")
    assert os.path.isfile(os.path.join(last, "snapshot.json"))
    resumed = Trainer(make_cfg(shapes_root, tmp_path / "b"), resume=last, max_iters=8, seed=3, progress=False)
    assert (resumed.start_epoch, resumed.start_iter, resumed.global_iter) == (0, 5, 5)
    part2 = resumed.train()
    assert len(part1) == 5 and len(part2) == 3
    for a, b in zip(full, part1 + part2):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k


def test_epoch_snapshots_and_final_model(shapes_root, tmp_path):
    cfg = make_cfg(shapes_root, tmp_path, {"epoch": 2, "snapshot_epoch": 1})
    tr = Trainer(cfg, seed=1, progress=False)
    seen = []
    end_of_epoch = tr._end_of_epoch

    def record(epoch):
        end_of_epoch(epoch)
        with open(os.path.join(tr.output_dir, "last", "snapshot.json")) as f:
            seen.append(json.load(f)["progress"]["epoch"])

    tr._end_of_epoch = record
    hist = tr.train()
    assert len(hist) == 2 * tr.steps_per_epoch
    assert seen == [1, 2]  # `last` follows every snapshot, so a killed run resumes from the newest one
    names = sorted(os.listdir(tr.output_dir))
    for name in ("0", "model_final", "last"):
        assert name in names
        files = sorted(os.listdir(os.path.join(tr.output_dir, name)))
        assert len(files) == 3 and "snapshot.json" in files, files  # model, optimizer, manifest; no temp files
    assert not [n for n in names if ".tmp" in n]
    from ppdet_htc.engine.model_builder import load_model_weights

    final = os.path.join(tr.output_dir, "model_final")
    assert "model_final.pdparams" in names and "0.pdparams" not in names  # plain weights file for other tools
    for spec in (final, final + ".pdparams", final + "/"):  # weights=output/x/model_final works as before
        model = build_model(cfg)
        load_model_weights(model, spec)  # strict load of the snapshot's model part
        for k, v in tr.model.state_dict().items():
            np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def test_non_finite_loss_stops_with_a_clear_message(shapes_root, tmp_path):
    tr = Trainer(make_cfg(shapes_root, tmp_path, {"epoch": 2, "snapshot_epoch": 1}), seed=1, progress=False)
    calls = {"n": 0}
    original = tr.train_model.forward

    def poisoned(batch):
        losses = original(batch)
        calls["n"] += 1
        if calls["n"] == tr.steps_per_epoch + 1:
            losses["loss_rpn_cls"] = paddle.to_tensor(float("nan"))
        return losses

    tr.train_model.forward = poisoned
    before = {k: v.numpy().copy() for k, v in tr.model.state_dict().items()}
    with pytest.raises(NonFiniteLossError) as e:
        tr.train()
    msg = str(e.value)
    assert "loss_rpn_cls=nan" in msg and "epoch 1 iteration 0" in msg
    assert "the last good snapshot is {}".format(os.path.join(tr.output_dir, "last")) in msg  # (= epoch 0's)
    assert "clip_grad_by_norm" in msg  # clipping is off: suggest it
    # The check runs before backward: the parameters in memory are those of the last good step (= snapshot 0;
    # only BatchNorm statistics moved in the poisoned forward pass).
    import glob

    saved = load_state_file(glob.glob(os.path.join(tr.output_dir, "0", "model-*.pdparams"))[0])
    trained = [(k, v) for k, v in tr.model.named_parameters() if not v.stop_gradient]
    assert len(trained) > 50
    for k, v in trained:
        np.testing.assert_array_equal(v.numpy(), saved[k], err_msg=k)
    assert any(not np.array_equal(before[k], saved[k]) for k in saved)


def _three_class_annotations(root, out_path):
    """The shapes train split with its last category (and that category's objects) removed."""
    coco = json.load(open(os.path.join(root, "annotations", "instances_train.json")))
    drop = max(c["id"] for c in coco["categories"])
    coco["categories"] = [c for c in coco["categories"] if c["id"] != drop]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] != drop]
    json.dump(coco, open(out_path, "w"))
    return str(out_path)


def test_finetune_80_class_checkpoint_on_3_classes(shapes_root, tmp_path, caplog):
    paddle.seed(0)
    big = build_model(load_config(TINY, ["num_classes=80"]))
    ckpt = str(tmp_path / "coco80.pdparams")
    save_state_file(ckpt, big.state_dict())
    anno = _three_class_annotations(shapes_root, tmp_path / "train3.json")
    cfg = make_cfg(shapes_root, tmp_path, {"pretrain_weights": ckpt, "epoch": 6, "num_classes": 3,
                                           "TrainDataset": {"anno_path": anno}, "LearningRate": {"base_lr": 0.02}})
    with caplog.at_level("INFO", logger="ppdet_htc"):
        tr = Trainer(cfg, seed=0, progress=False)
    text = caplog.text
    assert tr.model.bbox_head.bbox_score_stage0.weight.shape[-1] == 4  # 3 classes + background
    assert "class-dependent" in text
    for key in ("bbox_head.bbox_score_stage0.weight", "bbox_head.mask_head.head.2.conv_logits.weight"):
        assert key in text
    # Everything else came from the checkpoint.
    np.testing.assert_array_equal(tr.model.backbone.conv1.conv1.conv.weight.numpy(),
                                  big.backbone.conv1.conv1.conv.weight.numpy())
    hist = tr.train()
    losses = [h["loss"] for h in hist]
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4]), losses


def test_semantic_labels_from_instances_train(shapes_root, tmp_path):
    cfg = make_cfg(shapes_root, tmp_path, semantic=True)
    hist = Trainer(cfg, max_iters=2, progress=False).train()
    assert "loss_semantic" in hist[0] and hist[0]["loss_semantic"] > 0
    expected = {"loss_rpn_cls", "loss_rpn_reg", "loss_semantic", "loss"}
    expected |= {"loss_bbox_{}_stage{}".format(k, t) for k in ("cls", "reg") for t in range(3)}
    expected |= {"loss_mask_stage{}".format(t) for t in range(3)}
    assert set(hist[0]) == expected


def test_lr_schedule_warmup_piecewise_and_auto_scale():
    lr = LearningRate(0.02, [PiecewiseDecay(gamma=0.1, milestones=[8, 11]), LinearWarmup(steps=1000, start_factor=0.001)])
    sched = lr(step_per_epoch=500)
    vals = {}
    for i in range(6001):
        vals[i] = sched.get_lr()
        sched.step()
    for i in (0, 1, 500, 999):
        assert vals[i] == pytest.approx(0.02 * (0.001 * (1 - i / 1000) + i / 1000))
    assert vals[1000] == pytest.approx(0.02) and vals[3999] == pytest.approx(0.02)
    assert vals[4000] == pytest.approx(0.002) and vals[5499] == pytest.approx(0.002)
    assert vals[5500] == pytest.approx(0.0002)
    scaled = LearningRate(0.02, [PiecewiseDecay()], auto_scale=True, base_batch_size=16)
    assert scaled(100, total_batch_size=4).base_lr == pytest.approx(0.005)


def test_two_process_training_keeps_ranks_identical(shapes_root, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=REPO, PPDET_TEST_SHAPES=shapes_root, PPDET_TEST_OUT=str(out))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
           str(tmp_path / "log"), os.path.join(REPO, "tests", "engine", "ddp_worker.py")]
    res = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    logs = "".join(open(os.path.join(tmp_path, "log", f)).read() for f in os.listdir(tmp_path / "log"))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:] + logs[-3000:]
    w0 = load_state_file(str(out / "rank0.pdparams"))
    w1 = load_state_file(str(out / "rank1.pdparams"))
    init = load_state_file(str(out / "init.pdparams"))
    assert w0.keys() == w1.keys()
    for k in w0:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)
    moved = [k for k in w0 if not np.array_equal(w0[k], init[k])]
    assert len(moved) > 0.5 * len(w0)  # the ranks trained, and stayed identical
    assert os.path.isfile(out / "last" / "snapshot.json")  # rank 0 wrote the snapshot


def test_ctrl_c_saves_a_resumable_snapshot(shapes_root, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    out = tmp_path / "run"
    cfg_path = tmp_path / "cfg.yml"
    import yaml

    base = dict(train_overrides(shapes_root), epoch=50)
    cfg_path.write_text("_BASE_: ['{}']\n".format(TINY) + yaml.safe_dump(base))
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "scripts", "train.py"), "-c", str(cfg_path),
                             "--output_dir", str(out)], env=env, cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "global 3)" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=300)
    text = "".join(lines) + rest
    assert proc.returncode == 2, text
    assert "interrupted" in text and os.path.isfile(out / "last" / "snapshot.json"), text
    assert "-r {}".format(out / "last") in text  # says where the resumable snapshot is
    cfg = load_config(str(cfg_path))
    tr = Trainer(cfg, resume=str(out / "last"), max_iters=None, output_dir=str(out), progress=False)
    assert tr.global_iter >= 3


def test_train_command_draws_curves_next_to_its_log(shapes_root, tmp_path):
    """scripts/train.py writes train_curves.png beside train.log when it ends (here at --max_iters)."""
    import yaml

    from ppdet_htc.cli import train_main

    opts = train_overrides(shapes_root, epoch=2)
    opts["_BASE_"] = [TINY]
    cfg_path = tmp_path / "tiny_train.yml"
    cfg_path.write_text(yaml.safe_dump(opts))
    out = tmp_path / "run"
    train_main(["-c", str(cfg_path), "--max_iters", "3", "--output_dir", str(out)])
    log = (out / "train.log").read_text()
    assert log.count("(global ") >= 3
    png = (out / "train_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10000


def test_slow_iterations_still_log_progress(shapes_root, tmp_path, monkeypatch, caplog):
    """A line every log_iter iterations *or* every PPDET_HTC_PROGRESS_INTERVAL seconds, whichever comes first:
    with log_iter 1000 and a 0 s interval every iteration logs (with its ETA)."""
    import logging

    monkeypatch.setenv("PPDET_HTC_PROGRESS_INTERVAL", "0")
    cfg = make_cfg(shapes_root, tmp_path, {"log_iter": 1000})
    with caplog.at_level(logging.INFO, logger="ppdet_htc"):
        Trainer(cfg, max_iters=3, seed=1, progress=False).train()
    lines = [r.getMessage() for r in caplog.records if "(global " in r.getMessage()]
    assert len(lines) == 3 and all("eta" in ln for ln in lines)


def test_missing_image_fails_before_the_first_step(shapes_root, tmp_path, capsys):
    """Training checks its images up front (as evaluation does): seconds, not the middle of an epoch."""
    import shutil

    from ppdet_htc.cli import train_main

    root = str(tmp_path / "copy")
    shutil.copytree(shapes_root, root)
    victim = sorted(os.listdir(os.path.join(root, "train")))[-1]
    os.remove(os.path.join(root, "train", victim))
    cfg_path = tmp_path / "cfg.yml"
    import yaml

    cfg_path.write_text("_BASE_: ['{}']\n".format(TINY) + yaml.safe_dump(train_overrides(root)))
    started = time.time()
    with pytest.raises(SystemExit) as e:
        train_main(["-c", str(cfg_path), "--output_dir", str(tmp_path / "out")])
    assert e.value.code == 2 and time.time() - started < 60
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert victim in line and "1 of the files" in line
    assert "(global " not in open(tmp_path / "out" / "train.log").read()  # no training step ran
    assert line[len("error: "):] in open(tmp_path / "out" / "train.log").read()
