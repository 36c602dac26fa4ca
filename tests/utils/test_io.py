"""Atomic writers: the destination is either the old file or the complete new one, never a mix."""
import json
import os
import stat

import numpy as np
import pytest

from ppdet_htc.utils.io import atomic_save_bytes, atomic_write, write_json_atomic


def _leftovers(directory, keep):
    return sorted(set(os.listdir(directory)) - set(keep))


def test_writer_exception_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("old content")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path) as f:
            f.write("partial new content")
            f.flush()
            raise RuntimeError("boom")
    assert path.read_text() == "old content"
    assert _leftovers(tmp_path, ["result.json"]) == []


def test_json_error_mid_dump_keeps_old_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"AP": 0.5})
    with pytest.raises(TypeError, match="object"):
        write_json_atomic(path, {"AP": 0.7, "bad": object()})
    assert json.loads(path.read_text()) == {"AP": 0.5}
    assert _leftovers(tmp_path, ["metrics.json"]) == []


def test_text_and_binary_writes_replace_content(tmp_path):
    path = tmp_path / "sub" / "dir" / "out.txt"  # parents are created
    with atomic_write(path) as f:
        f.write("héllo")
    assert path.read_text(encoding="utf-8") == "héllo"
    atomic_save_bytes(path, b"\x00\x01\x02")
    assert path.read_bytes() == b"\x00\x01\x02"
    atomic_save_bytes(path, np.arange(4, dtype=np.uint8))  # any bytes-like object
    assert path.read_bytes() == bytes([0, 1, 2, 3])
    assert _leftovers(path.parent, ["out.txt"]) == []


def test_write_json_converts_numpy_values(tmp_path):
    path = tmp_path / "a.json"
    write_json_atomic(path, {"x": np.float32(0.5), "n": np.int64(3), "arr": np.arange(3)}, indent=2)
    assert json.loads(path.read_text()) == {"x": 0.5, "n": 3, "arr": [0, 1, 2]}


def test_new_file_gets_normal_permissions_and_existing_mode_is_kept(tmp_path):
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    path = tmp_path / "atomic.txt"
    write_json_atomic(path, [])
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(reference).st_mode)
    os.chmod(path, 0o640)
    write_json_atomic(path, [1])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_bad_mode_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", mode="a"):
            pass
    assert os.listdir(tmp_path) == []


def test_setup_logger_prints_each_line_once(capsys):
    import logging

    from ppdet_htc.utils.logger import setup_logger

    pkg, root = logging.getLogger("ppdet_htc"), logging.getLogger()
    saved = pkg.handlers[:]
    pkg.handlers.clear()  # so setup_logger binds a fresh handler to the captured stdout
    extra = logging.StreamHandler()  # what importing Paddle does to the root logger
    root.addHandler(extra)
    try:
        setup_logger()
        logging.getLogger("ppdet_htc.test").info("hello once")
        out = capsys.readouterr()
        assert (out.out + out.err).count("hello once") == 1
    finally:
        root.removeHandler(extra)
        pkg.handlers[:] = saved
        pkg.propagate = True
