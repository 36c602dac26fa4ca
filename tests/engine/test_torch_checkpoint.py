"""The PyTorch checkpoint reader: real PyTorch-written files read back exactly; crafted files are refused
without running anything; broken files give one-line errors naming the file. torch is never imported."""
import collections
import json
import os
import pickle
import struct
import sys
import zipfile

import numpy as np
import pytest

from ppdet_htc.engine.checkpoint import CheckpointError, UnsafeCheckpointError
from ppdet_htc.engine.torch_checkpoint import (
    check_torch_file,
    load_torch_file,
    read_torch_state_dict,
    torch_file_format,
)

from .pth_writer import MAGIC, pickle_bytes, write_pth

PTH_FILES = ("tiny_zip.pth", "tiny_legacy.pth", "bare_state_dict_zip.pth", "bare_state_dict_legacy.pth")


@pytest.fixture
def pth_dir(shared_reference):
    d = os.path.join(shared_reference, "mmdet", "pth_files")
    if not os.path.isdir(d):
        pytest.skip("../shared/reference/mmdet/pth_files is not available")
    return d


# --------------------------------------------------------------------------------------------
# Real files written by PyTorch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PTH_FILES)
def test_pytorch_written_files_read_back_exactly(pth_dir, name):
    expected = json.load(open(os.path.join(pth_dir, "expected.json")))
    arrays = np.load(os.path.join(pth_dir, "expected_arrays.npz"))
    path = os.path.join(pth_dir, name)
    state, meta = read_torch_state_dict(path)
    assert isinstance(state, collections.OrderedDict)
    assert list(state) == expected["state_dict_keys_in_order"]
    for key, value in state.items():
        assert str(value.dtype) == expected["dtypes"][key], key
        assert list(value.shape) == expected["shapes"][key], key
        assert value.dtype == arrays[key].dtype
        np.testing.assert_array_equal(value, arrays[key], err_msg=key)
        assert value.flags.c_contiguous and value.flags.writeable and value.flags.owndata
    if name.startswith("tiny"):
        want = dict(expected["meta"])
        want["CLASSES"] = tuple(want["CLASSES"])  # a tuple in the file, a list in JSON
        assert meta == want and isinstance(meta["CLASSES"], tuple)
    else:
        assert meta is None
    assert torch_file_format(path) == ("zip" if "zip" in name else "legacy")
    assert check_torch_file(path) == torch_file_format(path)


def test_views_share_storage_and_transposes_are_materialised(pth_dir):
    state, _ = read_torch_state_dict(os.path.join(pth_dir, "tiny_zip.pth"))
    base = state["extra.view_base"]
    np.testing.assert_array_equal(state["extra.view_transposed"], base.T)
    state["extra.view_base"][0, 0] = 123.0  # arrays are independent copies
    assert state["extra.view_transposed"][0, 0] != 123.0


def test_reader_does_not_import_torch(pth_dir):
    import subprocess

    code = ("import sys; sys.modules['torch'] = None\n"
            "from ppdet_htc.engine.torch_checkpoint import read_torch_state_dict\n"
            "s, m = read_torch_state_dict(sys.argv[1]); print(len(s))")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code, os.path.join(pth_dir, "tiny_legacy.pth")], cwd=repo,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "20"


# --------------------------------------------------------------------------------------------
# Files built here: both formats, views, dtypes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_round_trip_of_dtypes_and_shapes(tmp_path, fmt):
    rng = np.random.default_rng(0)
    state = collections.OrderedDict([
        ("w", rng.standard_normal((3, 4, 2, 2)).astype(np.float32)),
        ("h", rng.standard_normal(5).astype(np.float16)),
        ("d", rng.standard_normal((2, 2))),
        ("i", np.arange(6, dtype=np.int32)),
        ("l", np.array(7, dtype=np.int64)),
        ("u", np.arange(4, dtype=np.uint8)),
        ("b", np.array([True, False])),
        ("e", np.zeros((0, 3), np.float32)),
    ])
    path = write_pth(str(tmp_path / "x.pth"), {"meta": {"epoch": 3, "CLASSES": ("a", "b")}, "state_dict": state},
                     fmt=fmt)
    got, meta = read_torch_state_dict(path)
    assert list(got) == list(state) and meta == {"epoch": 3, "CLASSES": ("a", "b")}
    for k, v in state.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_strided_views_with_offsets(tmp_path, fmt):
    base = np.arange(24, dtype=np.float32)

    def build(p):
        p.w(b"}(")
        p.storages["s"] = base
        p.save("whole")
        p.tensor(base, key="s", shape=(4, 6), strides=(6, 1))
        p.save("transposed")
        p.tensor(base, key="s", shape=(6, 4), strides=(1, 6))
        p.save("sliced")
        p.tensor(base, key="s", offset=7, shape=(2, 3), strides=(6, 2))
        p.save("scalar")
        p.tensor(base, key="s", offset=23, shape=(), strides=())
        p.w(b"u")

    path = write_pth(str(tmp_path / "v.pth"), None, fmt=fmt, build=build)
    got = load_torch_file(path)
    grid = base.reshape(4, 6)
    np.testing.assert_array_equal(got["whole"], grid)
    np.testing.assert_array_equal(got["transposed"], grid.T)
    np.testing.assert_array_equal(got["sliced"], grid[1:3, 1::2])
    assert got["scalar"].shape == () and got["scalar"] == 23.0


def test_view_outside_its_storage_is_refused(tmp_path):
    base = np.arange(6, dtype=np.float32)

    def build(p):
        p.storages["s"] = base
        p.w(b"}(")
        p.save("bad")
        p.tensor(base, key="s", offset=4, shape=(3,), strides=(1,))
        p.w(b"u")

    path = write_pth(str(tmp_path / "oob.pth"), None, build=build)
    with pytest.raises(CheckpointError, match="past its storage") as e:
        load_torch_file(path)
    assert "oob.pth" in str(e.value)
    with pytest.raises(CheckpointError, match="past its storage"):
        check_torch_file(path)


def test_parameter_bfloat16_untyped_and_big_endian_storages(tmp_path):
    """_rebuild_parameter around a tensor; _rebuild_tensor_v3 over an UntypedStorage; byteorder 'big'."""
    values = np.array([1.0, -2.5, 3.25], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(">u2")  # exact in bfloat16
    data = (b"\x80\x02}(" + b"X\x01\x00\x00\x00p"
            + b"ctorch._utils\n_rebuild_parameter\n("
            + b"ctorch._utils\n_rebuild_tensor_v3\n(("
            + b"X\x07\x00\x00\x00storage" + b"ctorch\nUntypedStorage\n" + b"X\x01\x00\x00\x000"
            + b"X\x03\x00\x00\x00cpu" + b"K\x06tQ"
            + b"K\x00(K\x03t(K\x01t\x89ccollections\nOrderedDict\n)R" + b"ctorch\nbfloat16\n" + b"tR"
            + b"\x88ccollections\nOrderedDict\n)RtR"
            + b"X\x01\x00\x00\x00d" + b"ctorch._utils\n_rebuild_tensor_v2\n(("
            + b"X\x07\x00\x00\x00storage" + b"ctorch\nDoubleStorage\n" + b"X\x01\x00\x00\x001"
            + b"X\x03\x00\x00\x00cpu" + b"K\x02tQ"
            + b"K\x00(K\x02t(K\x01t\x89ccollections\nOrderedDict\n)RtR"
            + b"u.")
    path = tmp_path / "be.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("be/data.pkl", data)
        zf.writestr("be/byteorder", "big")
        zf.writestr("be/data/0", bf16.tobytes())
        zf.writestr("be/data/1", np.array([0.5, 1e300], ">f8").tobytes())
    got = load_torch_file(str(path))
    assert got["p"].dtype == np.float32
    np.testing.assert_array_equal(got["p"], values)
    assert got["d"].dtype == np.float64 and got["d"].dtype.isnative
    np.testing.assert_array_equal(got["d"], [0.5, 1e300])


def test_meta_with_a_tensor_is_refused(tmp_path):
    path = write_pth(str(tmp_path / "m.pth"), {"meta": {"best": np.zeros(2, np.float32)},
                                               "state_dict": {"a": np.zeros(1, np.float32)}})
    with pytest.raises(CheckpointError, match=r"meta\['best'\] is a tensor"):
        read_torch_state_dict(path)


def test_state_dict_entry_that_is_not_a_tensor_is_named(tmp_path):
    path = write_pth(str(tmp_path / "n.pth"), {"state_dict": {"a": np.zeros(1, np.float32), "b": 3}})
    with pytest.raises(CheckpointError, match="'b' is a int, expected a tensor"):
        read_torch_state_dict(path)


# --------------------------------------------------------------------------------------------
# Crafted files: refused before anything runs
# --------------------------------------------------------------------------------------------


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Eval:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import builtins

        return (builtins.eval, ("__import__('os').system({!r})".format(self.command),))


def _crafted_pickle(kind, marker):
    command = "touch {}".format(marker)
    if kind == "os.system":
        return pickle.dumps({"state_dict": {"a": _System(command)}}, protocol=2)
    if kind == "builtins.eval":
        return pickle.dumps({"state_dict": {"a": _Eval(command)}}, protocol=4)  # STACK_GLOBAL
    if kind == "posix.system":  # spelled out, as an attacker would write it
        return b"\x80\x02}X\x01\x00\x00\x00acposix\nsystem\nX" + struct.pack("<I", len(command)) \
            + command.encode() + b"\x85Rs."
    if kind == "subclass":  # build a dict subclass whose __setitem__ is os.system, then fill it
        return (b"\x80\x02cbuiltins\ntype\n(X\x04\x00\x00\x00Evil(ccollections\nOrderedDict\ntp0\n}"
                b"X\x0b\x00\x00\x00__setitem__cposix\nsystem\nstR)R.")
    if kind == "dotted":  # a protocol-4 dotted name reaching through an allowed function
        return b"\x80\x04ctorch._utils\n_rebuild_tensor_v2.__globals__\n."
    if kind == "marker-call":  # calling a storage class (our marker) with arguments
        return b"\x80\x02ctorch\nFloatStorage\nX\x01\x00\x00\x00x\x85R."
    raise AssertionError(kind)


CRAFTED = {
    "os.system": "posix.system",
    "builtins.eval": "builtins.eval",
    "posix.system": "posix.system",
    "subclass": "builtins.type",
    "dotted": "torch._utils._rebuild_tensor_v2.__globals__",
    "marker-call": "torch.FloatStorage",
}


def _legacy_with(main_pickle):
    head, _ = pickle_bytes(MAGIC)
    proto, _ = pickle_bytes(1001)
    info, _ = pickle_bytes({"little_endian": True})
    keys, _ = pickle_bytes([])
    return head + proto + info + main_pickle + keys


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_crafted_files_are_refused_and_nothing_runs(tmp_path, fmt, kind):
    marker = tmp_path / "pwned"
    data = _crafted_pickle(kind, marker)
    path = tmp_path / "evil.pth"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("evil/data.pkl", data)
    else:
        path.write_bytes(_legacy_with(data))
    for reader in (load_torch_file, read_torch_state_dict, check_torch_file):
        with pytest.raises(UnsafeCheckpointError) as e:
            reader(str(path))
        message = str(e.value)
        assert CRAFTED[kind] in message, message
        assert str(path) in message
        assert "\n" not in message
    assert not marker.exists(), "the crafted payload was executed"


def test_unknown_persistent_id_is_refused(tmp_path):
    path = tmp_path / "pid.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("p/data.pkl", b"\x80\x02(X\x06\x00\x00\x00moduletQ.")
    with pytest.raises(UnsafeCheckpointError, match="persistent id 'module'"):
        load_torch_file(str(path))


def test_rebuild_from_type_only_for_plain_tensor_types(tmp_path):
    path = tmp_path / "t.pth"
    data = (b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._utils\n_rebuild_tensor_v2\n"
            b"ctorch\nFloatStorage\n)}tR.")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("t/data.pkl", data)
    with pytest.raises(UnsafeCheckpointError, match="FloatStorage"):
        load_torch_file(str(path))


# --------------------------------------------------------------------------------------------
# Broken files: one line naming the file
# --------------------------------------------------------------------------------------------


def _assert_one_line(err, path):
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message


@pytest.mark.parametrize("name", PTH_FILES)
def test_truncated_files_give_one_line_errors(pth_dir, tmp_path, name):
    data = open(os.path.join(pth_dir, name), "rb").read()
    for cut in (10, len(data) // 3, len(data) // 2, len(data) - 20, len(data) - 1):
        path = tmp_path / "cut_{}_{}".format(cut, name)
        path.write_bytes(data[:cut])
        for reader in (read_torch_state_dict, check_torch_file):
            with pytest.raises(CheckpointError) as e:
                reader(str(path))
            _assert_one_line(e, path)


def test_empty_and_foreign_files(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty") as e:
        read_torch_state_dict(str(empty))
    _assert_one_line(e, empty)
    html = tmp_path / "page.pth"
    html.write_bytes(b"<!DOCTYPE html><html><body>Not found</body></html>")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as e:
        read_torch_state_dict(str(html))
    _assert_one_line(e, html)
    other_zip = tmp_path / "other.pth"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="without a PyTorch data.pkl") as e:
        read_torch_state_dict(str(other_zip))
    _assert_one_line(e, other_zip)
    plain_pickle = tmp_path / "plain.pth"
    plain_pickle.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_torch_state_dict(str(plain_pickle))
    assert torch_file_format(str(plain_pickle)) is None and torch_file_format(str(html)) is None
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_torch_state_dict(str(tmp_path / "nope.pth"))


def test_corrupted_storage_bytes_fail_the_crc_check(tmp_path):
    path = write_pth(str(tmp_path / "c.pth"), {"a": np.arange(1000, dtype=np.float32)})
    data = bytearray(open(path, "rb").read())
    pos = data.find(np.arange(1000, dtype=np.float32)[500:502].tobytes())
    data[pos] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError) as e:
        check_torch_file(path)
    _assert_one_line(e, path)


def test_legacy_storage_size_mismatch_and_trailing_bytes(tmp_path):
    path = write_pth(str(tmp_path / "l.pth"), {"a": np.arange(4, dtype=np.float32)}, fmt="legacy")
    data = open(path, "rb").read()
    (tmp_path / "extra.pth").write_bytes(data + b"junk")
    with pytest.raises(CheckpointError, match="unexpected bytes"):
        read_torch_state_dict(str(tmp_path / "extra.pth"))
    bad = data[:-(16 + 8)] + struct.pack("<q", 5) + data[-16:]
    (tmp_path / "count.pth").write_bytes(bad)
    with pytest.raises(CheckpointError, match="holds 5 elements, 4 declared"):
        read_torch_state_dict(str(tmp_path / "count.pth"))
    huge = data[:-(16 + 8)] + struct.pack("<q", 4) + data[-16:-8]
    (tmp_path / "short.pth").write_bytes(huge)
    with pytest.raises(CheckpointError, match="truncated"):
        read_torch_state_dict(str(tmp_path / "short.pth"))


def test_compressed_storage_records_are_refused(tmp_path):
    path = tmp_path / "z.pth"
    data, storages = pickle_bytes({"a": np.zeros(10000, np.float32)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("z/data.pkl", data)
        zf.writestr("z/data/0", storages["0"].tobytes(), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="compressed"):
        load_torch_file(str(path))
