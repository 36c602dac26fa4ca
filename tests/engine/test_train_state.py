"""Snapshots are all or nothing: crashes between the parts, mixed/partial/corrupt snapshots, crash leftovers."""
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ppdet_htc.cli import train_main
from ppdet_htc.engine.checkpoint import load_state_file, save_state_file
from ppdet_htc.engine.train_state import MANIFEST, SnapshotError, cleanup_stale_files, load_snapshot, resolve_snapshot
from ppdet_htc.engine.trainer import Trainer
from tests.engine.test_train import REPO, TINY, make_cfg, train_overrides


class _Crash(BaseException):
    """Stands for the process dying (power loss, SIGKILL) in the middle of a save."""


def part(directory, kind):
    (path,) = glob.glob(os.path.join(directory, "model-*.pdparams" if kind == "model" else "optimizer-*.pdopt"))
    return path


def progress_of(directory):
    return json.load(open(os.path.join(directory, MANIFEST)))["progress"]


@pytest.fixture(scope="module")
def two_snapshots(shapes_root, tmp_path_factory):
    """``out/last`` at global iteration 2 copied to ``out/keep``, then ``out/last`` advanced to iteration 3."""
    out = str(tmp_path_factory.mktemp("snap") / "run")
    Trainer(make_cfg(shapes_root, out), max_iters=2, seed=3, output_dir=out, progress=False).train()
    shutil.copytree(os.path.join(out, "last"), os.path.join(out, "keep"))
    Trainer(make_cfg(shapes_root, out), resume=os.path.join(out, "last"), max_iters=3, seed=3, output_dir=out,
            progress=False).train()
    assert progress_of(os.path.join(out, "last"))["global_iter"] == 3
    return out


@pytest.mark.parametrize("crash_at", [1, 2, 3])  # 1: model part, 2: optimizer part, 3: manifest (the commit)
def test_crash_between_the_parts_keeps_the_previous_snapshot(shapes_root, tmp_path, monkeypatch, crash_at):
    out = str(tmp_path / "run")
    Trainer(make_cfg(shapes_root, out), max_iters=2, seed=3, output_dir=out, progress=False).train()
    last = os.path.join(out, "last")
    good = {k: v.copy() for k, v in load_state_file(part(last, "model")).items()}
    good_files = sorted(os.listdir(last))

    real_replace, real_remove = os.replace, os.remove
    calls = {"n": 0}

    def replace(src, dst):
        if os.path.dirname(os.path.abspath(dst)) == os.path.abspath(last):
            calls["n"] += 1
            if calls["n"] == crash_at:
                monkeypatch.setattr(os, "remove", lambda p: None)  # a dead process cleans nothing up
                raise _Crash()
        return real_replace(src, dst)

    tr = Trainer(make_cfg(shapes_root, out), resume=last, max_iters=4, seed=3, output_dir=out, progress=False)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Crash):
        tr.train()
    monkeypatch.setattr(os, "replace", real_replace)
    monkeypatch.setattr(os, "remove", real_remove)
    leftovers = set(os.listdir(last)) - set(good_files)
    assert leftovers  # the crash left a temporary file (and maybe a new part) behind

    # Nothing was lost: `last` is still the complete snapshot of iteration 2, and resuming uses exactly it.
    resumed = Trainer(make_cfg(shapes_root, out), resume=last, max_iters=4, seed=3, output_dir=out, progress=False)
    assert resumed.global_iter == 2
    for k, v in resumed.model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), good[k], err_msg=k)
    assert sorted(os.listdir(last)) == good_files  # the leftovers were cleaned up when training started again
    resumed.train()
    assert progress_of(last)["global_iter"] == 4 and len(os.listdir(last)) == 3


def test_killed_process_during_save_resumes_through_the_cli(shapes_root, tmp_path):
    """A real process dies (os._exit) after the model part of its second save is in place."""
    out = tmp_path / "run"
    cfg = tmp_path / "cfg.yml"
    import yaml

    cfg.write_text("_BASE_: ['{}']\n".format(TINY) + yaml.safe_dump(train_overrides(shapes_root)))
    driver = (
        "import os, sys\n"
        "sys.path.insert(0, {repo!r})\n"
        "real = os.replace\n"
        "n = [0]\n"
        "def replace(src, dst):\n"
        "    if os.path.basename(os.path.dirname(dst)) == 'last':\n"
        "        n[0] += 1\n"
        "        if n[0] == int(os.environ['CRASH_AT']):\n"
        "            real(src, dst); os._exit(9)\n"
        "    return real(src, dst)\n"
        "os.replace = replace\n"
        "from ppdet_htc.cli import train_main\n"
        "train_main(sys.argv[1:])\n"
    ).format(repo=REPO)
    env = dict(os.environ, PYTHONUNBUFFERED="1", CRASH_AT="0")
    run1 = subprocess.run([sys.executable, "-c", driver, "-c", str(cfg), "--output_dir", str(out), "--max_iters", "2"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert run1.returncode == 0, run1.stderr[-2000:]
    env["CRASH_AT"] = "1"  # the model part of the next save is renamed into place, then the process dies
    run2 = subprocess.run([sys.executable, "-c", driver, "-c", str(cfg), "--output_dir", str(out), "--max_iters", "4",
                           "-r", str(out / "last")], capture_output=True, text=True, timeout=300, env=env)
    assert run2.returncode == 9, run2.stderr[-2000:]  # died mid-save
    assert len(os.listdir(out / "last")) == 4  # manifest + the old parts + the new model part (uncommitted)
    run3 = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "train.py"), "-c", str(cfg), "--output_dir",
                           str(out), "--max_iters", "3", "-r", str(out / "last")], capture_output=True, text=True,
                          timeout=300, env=env)
    assert run3.returncode == 0, run3.stderr[-2000:]
    assert "'global_iter': 2" in run3.stdout  # resumed from the complete snapshot
    assert "removed 1 file(s) left by an interrupted save" in run3.stdout
    assert progress_of(str(out / "last"))["global_iter"] == 3 and len(os.listdir(out / "last")) == 3


def test_resume_accepts_every_spelling_of_a_snapshot(two_snapshots):
    last = os.path.join(two_snapshots, "last")
    for spec in (last, last + "/", last + ".pdparams", last + ".pdopt", os.path.join(last, MANIFEST),
                 part(last, "model")):
        assert resolve_snapshot(spec) == ("dir", last), spec


def _damaged_copy(two_snapshots, tmp_path, damage):
    out = str(tmp_path / "run")
    shutil.copytree(two_snapshots, out)
    last = os.path.join(out, "last")
    damage(last, os.path.join(out, "keep"))
    return out, last


def _mix_optimizer(last, keep):
    """The optimizer part of another snapshot copied in, with a manifest that is consistent with it."""
    theirs = part(keep, "optimizer")
    mine = part(last, "optimizer")
    os.remove(mine)
    shutil.copy(theirs, os.path.join(last, os.path.basename(theirs)))
    manifest = json.load(open(os.path.join(last, MANIFEST)))
    from ppdet_htc.engine.train_state import _part_record

    manifest["parts"]["optimizer"] = _part_record(os.path.join(last, os.path.basename(theirs)))
    json.dump(manifest, open(os.path.join(last, MANIFEST), "w"))


DAMAGES = {
    "mixed parts": (_mix_optimizer, "mixed snapshot"),
    "optimizer of another snapshot under this name": (
        lambda last, keep: shutil.copyfile(part(keep, "optimizer"), part(last, "optimizer")), "optimizer part"),
    "truncated optimizer": (
        lambda last, keep: open(part(last, "optimizer"), "r+b").truncate(100), "optimizer part"),
    "empty optimizer": (lambda last, keep: open(part(last, "optimizer"), "wb").close(), "optimizer part"),
    "missing model part": (lambda last, keep: os.remove(part(last, "model")), "model part"),
    "flipped byte in the model": (
        lambda last, keep: _flip_byte(part(last, "model")), "sha256 of its model part"),
    "no manifest": (lambda last, keep: os.remove(os.path.join(last, MANIFEST)), MANIFEST),
    "garbage manifest": (lambda last, keep: open(os.path.join(last, MANIFEST), "w").write("{not json"), MANIFEST),
}


def _flip_byte(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) - 20)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_mixed_partial_or_corrupt_snapshot_is_refused_naming_the_last_complete_one(two_snapshots, tmp_path, damage):
    fn, what = DAMAGES[damage]
    out, last = _damaged_copy(two_snapshots, tmp_path, fn)
    cfg = make_cfg("", out)  # building the model only: no data needed
    from ppdet_htc.engine.model_builder import build_model

    with pytest.raises(SnapshotError) as e:
        load_snapshot(last, build_model(cfg))
    msg = str(e.value)
    assert "\n" not in msg and what in msg and last in msg
    keep = os.path.join(out, "keep")
    assert "the newest complete snapshot is {} (epoch 0, iteration 2 of the epoch, global iteration 2)".format(keep) in msg
    assert "-r {}".format(keep) in msg


def test_corrupt_optimizer_file_is_one_line_through_the_cli(two_snapshots, shapes_root, tmp_path, capsys):
    out, last = _damaged_copy(two_snapshots, tmp_path, DAMAGES["truncated optimizer"][0])
    cfg = tmp_path / "cfg.yml"
    import yaml

    cfg.write_text("_BASE_: ['{}']\n".format(TINY) + yaml.safe_dump(train_overrides(shapes_root)))
    with pytest.raises(SystemExit) as e:
        train_main(["-c", str(cfg), "--output_dir", out, "-r", last])
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "optimizer part" in err[0] and "truncated" in err[0] and "-r " in err[0], err


def test_legacy_two_file_snapshots(two_snapshots, tmp_path):
    """Old layout (``x.pdparams`` + ``x.pdopt``): resumes with a warning; an empty or missing .pdopt is one line."""
    from ppdet_htc.engine.model_builder import build_model

    out = str(tmp_path / "legacy")
    os.makedirs(out)
    last = os.path.join(two_snapshots, "last")
    shutil.copyfile(part(last, "model"), os.path.join(out, "old.pdparams"))
    shutil.copyfile(part(last, "optimizer"), os.path.join(out, "old.pdopt"))
    model = build_model(make_cfg("", out))
    assert load_snapshot(os.path.join(out, "old"), model)["global_iter"] == 3
    open(os.path.join(out, "old.pdopt"), "wb").close()
    with pytest.raises(SnapshotError, match=r"old\.pdopt is empty"):
        load_snapshot(os.path.join(out, "old.pdparams"), model)
    with open(os.path.join(out, "old.pdopt"), "wb") as f:
        f.write(open(part(last, "optimizer"), "rb").read()[:50])
    with pytest.raises(SnapshotError, match=r"old\.pdopt is truncated"):
        load_snapshot(os.path.join(out, "old"), model)
    os.remove(os.path.join(out, "old.pdopt"))
    with pytest.raises(SnapshotError, match="partial"):
        load_snapshot(os.path.join(out, "old"), model)
    with pytest.raises(SnapshotError, match="not found.*no complete snapshot"):
        load_snapshot(os.path.join(out, "nothing"), model)


def test_cleanup_only_touches_what_a_save_leaves(tmp_path):
    out = tmp_path / "o"
    (out / "last").mkdir(parents=True)
    (out / "last" / ".snapshot.json.ab12.tmp").write_text("x")
    save_state_file(str(out / "last" / "model-0123456789ab.pdparams"), {"a": np.zeros(2, np.float32)})
    (out / "half").mkdir()
    (out / "half" / "optimizer-0123456789ab.pdopt").write_bytes(b"")
    (out / ".last.pdparams.x1y2.tmp").write_bytes(b"")
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "model-final.pdparams").write_text("not ours")  # not a part name we write
    removed = cleanup_stale_files(str(out))
    assert len(removed) == 4
    assert sorted(os.listdir(out)) == ["mine", "notes.txt"]  # the manifest-less leftovers went, the rest stays
    assert os.listdir(out / "mine") == ["model-final.pdparams"]
