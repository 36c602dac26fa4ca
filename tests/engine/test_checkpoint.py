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


# --------------------------------------------------------------------------------------------
# Bad values, PyTorch files, broken files (issue 11 item 7)
# --------------------------------------------------------------------------------------------


def _tiny_state(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_integer_tensor_for_float_parameter_is_an_error_naming_the_key(tmp_path):
    model = _Tiny()
    state = _tiny_state(model)
    state["head.weight"] = state["head.weight"].astype(np.int64)
    state["backbone.bias"] = np.ones_like(state["backbone.bias"], dtype=bool)
    path = str(tmp_path / "ints.pdparams")
    save_state_file(path, state)
    before = model.head.weight.numpy().copy()
    with pytest.raises(CheckpointError) as e:
        load_weights(model, path)
    msg = str(e.value)
    assert "head.weight: int64 for a float32 parameter" in msg and "backbone.bias: bool" in msg
    assert path in msg and "\n" not in msg
    np.testing.assert_array_equal(model.head.weight.numpy(), before)  # nothing was assigned
    with pytest.raises(CheckpointError, match="head.weight: int64"):
        load_pretrained(_Tiny(), path)


def test_nan_and_inf_values_are_an_error_naming_the_keys(tmp_path):
    model = _Tiny()
    state = _tiny_state(model)
    state["head.bias"][1] = np.nan
    state["backbone.weight"][0, 0] = -np.inf
    with pytest.raises(CheckpointError) as e:
        load_weights(model, "ckpt.pdparams", state=state)
    msg = str(e.value)
    assert "head.bias (1 of 4 values)" in msg and "backbone.weight (1 of 12 values)" in msg and "NaN or inf" in msg
    wrapper = paddle.nn.Layer()
    wrapper.model = _Tiny()  # keys model.head.bias ...: lenient loading names the checkpoint's key too
    with pytest.raises(CheckpointError, match=r"head.bias \(model model.head.bias\)"):
        load_pretrained(wrapper, "ckpt", state=state)


def test_float16_checkpoint_values_are_accepted_for_float32_parameters(tmp_path):
    model = _Tiny()
    state = {k: v.astype(np.float16) for k, v in _tiny_state(model).items()}
    load_weights(_Tiny(), "half", state=state)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_pytorch_file_given_as_pdparams_points_to_the_converter(tmp_path, fmt):
    from .pth_writer import write_pth

    path = write_pth(str(tmp_path / "model_final.pdparams"), {"state_dict": {"a": np.zeros(2, np.float32)}},
                     fmt=fmt)
    with pytest.raises(CheckpointError) as e:
        load_state_file(path)
    msg = str(e.value)
    assert "PyTorch checkpoint ({} format)".format(fmt) in msg and "ppdet-htc-convert-mmdet" in msg
    assert path in msg and "\n" not in msg


def test_empty_truncated_and_foreign_files_are_one_line_checkpoint_errors(tmp_path):
    empty = tmp_path / "empty.pdparams"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty") as e:
        load_state_file(str(empty))
    assert "\n" not in str(e.value)
    good = str(tmp_path / "g.pdparams")
    save_state_file(good, {"a": np.arange(5000, dtype=np.float32), "b": np.ones(3, np.float32)})
    data = open(good, "rb").read()
    for cut in (1, 2, 100, len(data) // 2, len(data) - 1):
        bad = tmp_path / "cut{}.pdparams".format(cut)
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as e:
            load_state_file(str(bad))
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
    html = tmp_path / "page.pdparams"
    html.write_bytes(b"<!DOCTYPE html>\n<html><body>Access denied</body></html>")
    with pytest.raises(CheckpointError, match="an HTML page of 55 bytes starting with '<!DOCTYPE html>"):
        load_state_file(str(html))
    npz = tmp_path / "w.npz"
    np.savez(npz, a=np.arange(10000, dtype=np.float32))
    (tmp_path / "cut.npz").write_bytes(npz.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="cut.npz") as e:
        load_state_file(str(tmp_path / "cut.npz"))
    assert "\n" not in str(e.value)


def test_verify_checkpoint_file_accepts_every_known_format(tmp_path, shared_reference):
    from ppdet_htc.engine.checkpoint import checkpoint_format, verify_checkpoint_file

    from .pth_writer import write_pth

    pd = str(tmp_path / "a.pdparams")
    save_state_file(pd, {"a": np.ones(3, np.float32)})
    npz = str(tmp_path / "b.npz")
    np.savez(npz, a=np.ones(3, np.float32))
    zp = write_pth(str(tmp_path / "c.pth"), {"a": np.ones(3, np.float32)})
    lg = write_pth(str(tmp_path / "d.pth"), {"a": np.ones(3, np.float32)}, fmt="legacy")
    assert [verify_checkpoint_file(p) for p in (pd, npz, zp, lg)] == ["pdparams", "npz", "torch_zip", "torch_legacy"]
    real = os.path.join(shared_reference, "mmdet", "pth_files", "tiny_legacy.pth")
    assert checkpoint_format(real) == "torch_legacy"
    for bad, pattern in ((b"", "an empty file"), (b'{"error": "quota"}', "JSON text"),
                         (b"\x00\x01\x02binary", "binary data")):
        path = tmp_path / "bad.bin"
        path.write_bytes(bad)
        with pytest.raises(CheckpointError, match=pattern):
            verify_checkpoint_file(str(path))
