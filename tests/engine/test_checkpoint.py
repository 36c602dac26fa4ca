"""Checkpoint files: safe loading (no code execution), Paddle compatibility, strict/lenient loading."""
import os
import pickle

import numpy as np
import paddle
import pytest

from ppdet_htc.engine.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    load_pretrained,
    load_state_file,
    load_weights,
    match_state_dict,
    save_state_file,
)


class _Exploit(object):
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch {}".format(self.marker),))


def test_crafted_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pdparams"
    with open(path, "wb") as f:
        pickle.dump({"backbone.w": np.zeros(3, np.float32), "x": _Exploit(str(marker))}, f, protocol=4)
    with pytest.raises(UnsafeCheckpointError) as e:
        load_state_file(str(path))
    assert "posix.system" in str(e.value) or "os.system" in str(e.value)
    assert str(path) in str(e.value)
    assert not marker.exists(), "the pickle payload was executed"


def test_paddle_saved_file_loads_and_fp16_is_cast(tmp_path):
    layer = paddle.nn.Sequential(paddle.nn.Linear(3, 4), paddle.nn.BatchNorm1D(4))
    path = str(tmp_path / "p.pdparams")
    paddle.save(layer.state_dict(), path)
    state = load_state_file(path)
    assert set(state) == set(layer.state_dict())  # Paddle's name-map entry is dropped
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(state[k], v.numpy())
    half = str(tmp_path / "h.pdparams")
    save_state_file(half, layer.state_dict(), dtype="float16")
    st = load_state_file(half)
    assert st["0.weight"].dtype == np.float32
    np.testing.assert_allclose(st["0.weight"], layer.state_dict()["0.weight"].numpy(), atol=1e-3)
    assert set(paddle.load(half)) == set(layer.state_dict())  # our files load in Paddle too


def test_truncated_and_non_dict_files(tmp_path):
    good = str(tmp_path / "g.pdparams")
    save_state_file(good, {"a": np.ones(1000, np.float32)})
    data = open(good, "rb").read()
    bad = tmp_path / "t.pdparams"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="t.pdparams"):
        load_state_file(str(bad))
    lst = tmp_path / "l.pdparams"
    lst.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_state_file(str(lst))
    with pytest.raises(FileNotFoundError, match="nope.pdparams"):
        load_state_file(str(tmp_path / "nope.pdparams"))


class _Tiny(paddle.nn.Layer):
    def __init__(self, out=4):
        super().__init__()
        self.backbone = paddle.nn.Linear(3, 4)
        self.head = paddle.nn.Linear(4, out)


def test_strict_load_reports_every_problem():
    model = _Tiny()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    state.pop("head.bias")
    state["extra.weight"] = np.zeros(2, np.float32)
    state["head.weight"] = np.zeros((4, 9), np.float32)
    with pytest.raises(CheckpointMismatchError) as e:
        load_weights(model, "ckpt", state=state)
    msg = str(e.value)
    assert "head.bias" in msg and "extra.weight" in msg and "head.weight" in msg and "[4, 9]" in msg
    assert e.value.report["missing"] == ["head.bias"]


def test_strict_load_round_trip(tmp_path):
    a, b = _Tiny(), _Tiny()
    path = str(tmp_path / "a.pdparams")
    save_state_file(path, a.state_dict())
    load_weights(b, path)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), b.state_dict()[k].numpy())


def test_lenient_suffix_matching_like_paddledetection():
    model = _Tiny(out=7)
    state = {
        "weight": np.ones((3, 4), np.float32),  # ambiguous suffix: longest match rule picks nothing better
        "backbone.weight": np.full((3, 4), 2.0, np.float32),
        "head.weight": np.zeros((4, 80), np.float32),  # wrong shape: skipped and reported
        "fc.weight": np.zeros((2, 2), np.float32),  # unused
    }
    with pytest.raises(Exception):
        match_state_dict({k: list(v.shape) for k, v in model.state_dict().items()}, {"weight": state["weight"]})
    del state["weight"]
    report = load_pretrained(model, "ckpt", state=state)
    np.testing.assert_array_equal(model.backbone.weight.numpy(), state["backbone.weight"])
    assert report["shape"] == [("head.weight", [4, 80], [4, 7])]
    assert "fc.weight" in report["unexpected"] and "head.bias" in report["missing"]
