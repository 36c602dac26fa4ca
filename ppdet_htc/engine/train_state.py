"""Training snapshots: all or nothing. Model, optimizer/schedule and progress are one unit.

A snapshot is a directory ``<output_dir>/<name>/`` (``last``, ``model_final``, ``best_model``, ``<epoch>``)::

    model-<id>.pdparams      model state dict (a plain Paddle ``.pdparams``)
    optimizer-<id>.pdopt     optimizer accumulators, LR schedule, progress, the snapshot id
    snapshot.json            the manifest: id, progress, and each part's file name, size and sha256

Saving writes the parts under new names (``<id>`` is fresh for every save), each atomically, then
replaces ``snapshot.json`` atomically: that rename is the commit. Until it happens the directory's
manifest still names the previous parts, which are deleted only after the commit. So a crash at any
point leaves either the old complete snapshot or the new complete one, never a mix, and ``last``
always names the newest complete snapshot. ``model_final`` and ``best_model`` also get a plain
``<name>.pdparams`` next to their directory (a hard link to the model part) for PaddleDetection-style tools. Files a crash leaves behind (temporary files, parts no
manifest names) are removed by :func:`cleanup_stale_files` when training starts again.

Loading verifies the manifest, the sizes and sha256 of both parts and the id stored in the optimizer
part; any mismatch is a :class:`SnapshotError` naming what is wrong and the newest complete snapshot
next to it. Snapshots of older versions (``<name>.pdparams`` + ``<name>.pdopt`` side by side, no
manifest) still resume, with a warning that their parts cannot be checked against each other.

Paddle names optimizer accumulators after *internal* parameter names (``conv2d_12.w_0_velocity_0``),
which depend on how many layers the process created before. We store them under the parameters'
structured names instead, so a snapshot resumes in any process.
"""
import datetime
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import uuid

import numpy as np

from ..errors import UserError
from ..utils.io import atomic_write, write_json_atomic
from .checkpoint import CheckpointError, load_state_file, load_weights, save_state_file

__all__ = [
    "SnapshotError",
    "save_snapshot",
    "load_snapshot",
    "copy_snapshot",
    "publish_weights",
    "resolve_snapshot",
    "snapshot_model_file",
    "latest_complete_snapshot",
    "cleanup_stale_files",
    "MANIFEST",
]

logger = logging.getLogger(__name__)

MANIFEST = "snapshot.json"
FORMAT = "ppdet_htc-snapshot"
VERSION = 1
_SCHED_KEY = "LR_Scheduler"
_PART_FILE = {"model": "model-{}.pdparams", "optimizer": "optimizer-{}.pdopt"}
_PART_RE = re.compile(r"^(model-[0-9a-f]{12}\.pdparams|optimizer-[0-9a-f]{12}\.pdopt)$")
_TEMP_RE = re.compile(r"^\..+\.tmp$")  # utils.io.atomic_write's temporary files: .<name>.<random>.tmp
_SUFFIXES = (".pdparams", ".pdopt")


class SnapshotError(UserError, CheckpointError):
    """A snapshot is missing, incomplete, damaged or mixed; the message names the newest complete one."""


# ------------------------------------------------------------------------------------ optimizer state


def _param_names(model):
    return {p.name: name for name, p in model.named_parameters()}


def _optimizer_state_structured(model, optimizer):
    internal_to_structured = _param_names(model)
    # Longest internal name first so 'linear_1.w_0' is not matched by 'linear_1.w'.
    internals = sorted(internal_to_structured, key=len, reverse=True)
    out = {}
    for key, value in optimizer.state_dict().items():
        if key == _SCHED_KEY:
            continue
        owner = next((n for n in internals if key.startswith(n + "_")), None)
        if owner is None:
            out["__raw__/" + key] = value.numpy() if hasattr(value, "numpy") else value
            continue
        suffix = key[len(owner):]
        out["param/" + internal_to_structured[owner] + "\t" + suffix] = value.numpy() if hasattr(value, "numpy") else value
    return out


def _optimizer_state_internal(model, stored, source):
    structured_to_internal = {name: p.name for name, p in model.named_parameters()}
    out = {}
    for key, value in stored.items():
        if key.startswith("param/"):
            name, suffix = key[len("param/"):].split("\t", 1)
            if name not in structured_to_internal:
                raise SnapshotError("{}: the optimizer state refers to parameter {!r}, which this model does not have; "
                                    "the snapshot belongs to another architecture or config".format(source, name))
            out[structured_to_internal[name] + suffix] = value
        elif key.startswith("__raw__/"):
            out[key[len("__raw__/"):]] = value
    return out


# ------------------------------------------------------------------------------------ paths


def _strip(spec):
    """``out/x/last``, ``out/x/last/``, ``out/x/last.pdparams|.pdopt``, ``out/x/last/snapshot.json`` -> ``out/x/last``."""
    spec = os.path.expanduser(os.fspath(spec))
    spec = spec.rstrip("/\\") or spec
    if os.path.basename(spec) == MANIFEST or _PART_RE.match(os.path.basename(spec)):
        return os.path.dirname(spec) or "."  # a file inside a snapshot directory
    for ext in _SUFFIXES:
        if spec.endswith(ext):
            return spec[: -len(ext)]
    return spec


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _part_record(path):
    return {"file": os.path.basename(path), "bytes": os.path.getsize(path), "sha256": _file_sha256(path)}


def _read_manifest(directory):
    """The manifest dict of ``directory``, or raise SnapshotError saying why it is not usable."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise SnapshotError("{} is missing (the save was interrupted before it completed)".format(MANIFEST))
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise SnapshotError("unreadable {} ({})".format(MANIFEST, e)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("parts"), dict):
        raise SnapshotError("{} is not a ppdet_htc snapshot manifest".format(MANIFEST))
    if int(manifest.get("version", 0)) > VERSION:
        raise SnapshotError("{} was written by a newer ppdet_htc (snapshot format {}); upgrade to use it".format(
            MANIFEST, manifest.get("version")))
    for part in _PART_FILE:
        rec = manifest["parts"].get(part)
        if not isinstance(rec, dict) or not {"file", "bytes", "sha256"} <= set(rec):
            raise SnapshotError("{} has no valid entry for the {} part".format(MANIFEST, part))
    return manifest


def _check_part(directory, manifest, part, hash_check=True):
    rec = manifest["parts"][part]
    path = os.path.join(directory, os.path.basename(rec["file"]))
    if not os.path.isfile(path):
        raise SnapshotError("its {} part {} is missing".format(part, rec["file"]))
    size = os.path.getsize(path)
    if size != rec["bytes"]:
        raise SnapshotError("its {} part {} has {} bytes, the manifest says {} (truncated or replaced)".format(
            part, rec["file"], size, rec["bytes"]))
    if hash_check and _file_sha256(path) != rec["sha256"]:
        raise SnapshotError("the sha256 of its {} part {} differs from the manifest (damaged or replaced)".format(
            part, rec["file"]))
    return path


def _describe(directory, manifest):
    prog = manifest.get("progress") or {}
    return "{} (epoch {}, iteration {} of the epoch, global iteration {})".format(
        directory, prog.get("epoch", "?"), prog.get("iter_in_epoch", "?"), prog.get("global_iter", "?"))


def latest_complete_snapshot(folder, exclude=None):
    """``(directory, manifest)`` of the snapshot in ``folder`` with the highest global iteration, or None.

    Cheap check (manifest readable, parts present with the recorded sizes); loading verifies the sha256.
    """
    if not folder or not os.path.isdir(folder):
        return None
    best = None
    for entry in sorted(os.listdir(folder)):
        d = os.path.join(folder, entry)
        if exclude and os.path.abspath(d) == os.path.abspath(exclude):
            continue
        if not os.path.isfile(os.path.join(d, MANIFEST)):
            continue
        try:
            manifest = _read_manifest(d)
            for part in _PART_FILE:
                _check_part(d, manifest, part, hash_check=False)
        except SnapshotError:
            continue
        key = (int((manifest.get("progress") or {}).get("global_iter", -1)), entry == "last")
        if best is None or key > best[0]:
            best = (key, d, manifest)
    return None if best is None else (best[1], best[2])


def _hint(directory):
    """Sentence naming the newest complete snapshot next to ``directory`` (for error messages)."""
    folder = os.path.dirname(os.path.abspath(directory))
    found = latest_complete_snapshot(folder, exclude=directory)
    if found is None:
        return "there is no complete snapshot in {}; start without -r (or from weights)".format(folder)
    return "the newest complete snapshot is {}: resume with -r {}".format(_describe(*found), found[0])


def resolve_snapshot(spec):
    """What ``spec`` names: ``('dir', directory)`` or ``('legacy', (pdparams, pdopt))``; else SnapshotError.

    Accepted: ``out/x/last``, ``out/x/last/``, ``out/x/last.pdparams``, ``out/x/last.pdopt``, a file inside
    the snapshot directory, and the old two-file layout ``out/x/last.pdparams`` + ``.pdopt``.
    """
    base = _strip(spec)
    if os.path.isdir(base):
        if not os.path.isfile(os.path.join(base, MANIFEST)):
            raise SnapshotError("snapshot {} is incomplete: {} is missing (the save was interrupted); {}".format(
                base, MANIFEST, _hint(base)))
        return "dir", base
    params, opt = base + ".pdparams", base + ".pdopt"
    if os.path.isfile(params) and os.path.isfile(opt):
        return "legacy", (params, opt)
    if os.path.isfile(params) or os.path.isfile(opt):
        present = params if os.path.isfile(params) else opt
        raise SnapshotError("snapshot {} is partial: {} exists without {}; {}".format(
            base, present, opt if present == params else params, _hint(base)))
    raise SnapshotError("snapshot not found: {} (expected a snapshot directory such as output/<config>/last); {}".format(
        spec, _hint(base)))


def snapshot_model_file(spec):
    """The verified model file of the snapshot ``spec`` names, or None if ``spec`` is no snapshot.

    Lets ``weights=output/x/model_final`` (or ``.../model_final.pdparams``) evaluate a snapshot's model.
    """
    spec = os.fspath(spec)
    if os.path.isfile(os.path.expanduser(spec)) and not os.path.basename(spec) == MANIFEST:
        return None  # an ordinary checkpoint file (or a legacy snapshot's .pdparams)
    base = _strip(spec)
    if not os.path.isdir(base):
        return None
    if not os.path.isfile(os.path.join(base, MANIFEST)):
        if any(_PART_RE.match(f) or _TEMP_RE.match(f) for f in os.listdir(base)):
            raise SnapshotError("snapshot {} is incomplete: {} is missing (the save was interrupted); {}".format(
                base, MANIFEST, _hint(base)))
        return None
    try:
        return _check_part(base, _read_manifest(base), "model")
    except SnapshotError as e:
        raise SnapshotError("snapshot {} is not usable: {}; {}".format(base, e, _hint(base))) from None


# ------------------------------------------------------------------------------------ saving


def _save_pickle(path, obj):
    with atomic_write(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def _remove_unreferenced(directory, manifest):
    keep = {MANIFEST} | {os.path.basename(r["file"]) for r in manifest["parts"].values()}
    removed = []
    for name in os.listdir(directory):
        if name not in keep and (_PART_RE.match(name) or _TEMP_RE.match(name)):
            try:
                os.remove(os.path.join(directory, name))
                removed.append(name)
            except FileNotFoundError:
                pass
    return removed


def _commit(directory, name, sid, parts, progress):
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "id": sid,
        "name": name,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "progress": progress,
        "parts": parts,
    }
    write_json_atomic(os.path.join(directory, MANIFEST), manifest, indent=2)  # the commit point
    _remove_unreferenced(directory, manifest)
    return directory


def _progress_json(progress):
    return json.loads(json.dumps(dict(progress), default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def save_snapshot(directory, model, optimizer, progress):
    """Write the snapshot directory ``directory`` (model, optimizer + schedule, ``progress``) all or nothing."""
    directory = _strip(directory)
    os.makedirs(directory, exist_ok=True)
    sid = uuid.uuid4().hex[:12]
    progress = _progress_json(progress)
    model_path = os.path.join(directory, _PART_FILE["model"].format(sid))
    opt_path = os.path.join(directory, _PART_FILE["optimizer"].format(sid))
    save_state_file(model_path, model.state_dict())
    sched = optimizer._learning_rate
    state = {
        "format": "ppdet_htc-optimizer",
        "snapshot_id": sid,
        "optimizer": _optimizer_state_structured(model, optimizer),
        _SCHED_KEY: sched.state_dict() if hasattr(sched, "state_dict") else {},
        "progress": progress,
        "last_epoch": int(progress.get("epoch", 0)),
    }
    _save_pickle(opt_path, state)
    parts = {"model": _part_record(model_path), "optimizer": _part_record(opt_path)}
    return _commit(directory, os.path.basename(directory), sid, parts, progress)


def copy_snapshot(src, dst):
    """Publish the complete snapshot ``src`` also as ``dst`` (hard links when possible), all or nothing."""
    src, dst = _strip(src), _strip(dst)
    manifest = _read_manifest(src)
    os.makedirs(dst, exist_ok=True)
    for part in _PART_FILE:
        source = _check_part(src, manifest, part, hash_check=False)
        target = os.path.join(dst, os.path.basename(source))
        if os.path.exists(target):
            continue
        tmp = os.path.join(dst, ".{}.{}.tmp".format(os.path.basename(source), uuid.uuid4().hex[:8]))
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        try:
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    return _commit(dst, os.path.basename(dst), manifest["id"], manifest["parts"], manifest.get("progress") or {})


def publish_weights(directory, path):
    """Make the model part of the complete snapshot ``directory`` also available as the plain file ``path``
    (``output/x/model_final.pdparams``, for tools that expect PaddleDetection's file); a hard link when possible,
    replaced atomically, so ``path`` is always a whole model file."""
    directory = _strip(directory)
    source = _check_part(directory, _read_manifest(directory), "model", hash_check=False)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".{}.{}.tmp".format(os.path.basename(path),
                                                                                   uuid.uuid4().hex[:8]))
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


# ------------------------------------------------------------------------------------ loading


def _load_optimizer_file(path):
    from .checkpoint import UnsafeCheckpointError, _SafeUnpickler  # as for weights: no code runs while loading

    if not os.path.isfile(path):
        raise SnapshotError("optimizer state not found: {}".format(path))
    if os.path.getsize(path) == 0:
        raise SnapshotError("optimizer state {} is empty (0 bytes); the snapshot cannot be resumed".format(path))
    try:
        with open(path, "rb") as f:
            state = _SafeUnpickler(f, path).load()
    except UnsafeCheckpointError:
        raise
    except pickle.UnpicklingError as e:
        raise SnapshotError("optimizer state {} is truncated or not a ppdet_htc optimizer file ({})".format(
            path, e)) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, ImportError, MemoryError) as e:
        raise SnapshotError("optimizer state {} is truncated or not a ppdet_htc optimizer file ({}: {})".format(
            path, type(e).__name__, e)) from None
    if not isinstance(state, dict) or "optimizer" not in state:
        raise SnapshotError("{} is not a ppdet_htc optimizer file (no 'optimizer' entry)".format(path))
    return state


def _apply_optimizer_state(model, optimizer, state, source):
    opt_state = {k: np.asarray(v) if isinstance(v, np.ndarray) else v
                 for k, v in _optimizer_state_internal(model, state["optimizer"], source).items()}
    if state.get(_SCHED_KEY):
        opt_state[_SCHED_KEY] = dict(state[_SCHED_KEY])  # restores the schedule's step as well
    optimizer.set_state_dict(opt_state)


def load_snapshot(spec, model, optimizer=None):
    """Restore model (strict) and, if given, optimizer + schedule from a verified snapshot; return its progress."""
    kind, where = resolve_snapshot(spec)
    if kind == "legacy":
        params_path, opt_path = where
        logger.warning("%s and %s use the old two-file snapshot layout: they cannot be checked against each other; "
                       "new snapshots are directories with a manifest", params_path, opt_path)
        state = _load_optimizer_file(opt_path)
        load_weights(model, params_path, state=load_state_file(params_path))
        progress = state.get("progress", {"epoch": state.get("last_epoch", 0)})
        source = params_path
    else:
        directory = where
        try:
            manifest = _read_manifest(directory)
            model_path = _check_part(directory, manifest, "model")
            opt_path = _check_part(directory, manifest, "optimizer")
            state = _load_optimizer_file(opt_path)
            if state.get("snapshot_id") != manifest["id"]:
                raise SnapshotError("its optimizer part belongs to snapshot {!r}, the manifest to {!r} "
                                    "(mixed snapshot)".format(state.get("snapshot_id"), manifest["id"]))
        except SnapshotError as e:
            raise SnapshotError("cannot resume from {}: {}; {}".format(directory, e, _hint(directory))) from None
        load_weights(model, model_path, state=load_state_file(model_path))
        progress = manifest.get("progress") or state.get("progress") or {}
        source = directory
    if optimizer is not None:
        _apply_optimizer_state(model, optimizer, state, source)
    logger.info("resumed from %s (%s)", source, progress)
    return progress


# ------------------------------------------------------------------------------------ crash leftovers


def cleanup_stale_files(folder):
    """Remove what an interrupted save left in ``folder`` and its snapshot directories; returns the paths.

    Only files this module (or ``atomic_write``) names are touched: ``.<name>.<random>.tmp`` temporaries,
    and ``model-<id>.pdparams`` / ``optimizer-<id>.pdopt`` parts that no manifest names. A snapshot
    directory left without any manifest and holding nothing else is removed.
    """
    removed = []
    if not folder or not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and _TEMP_RE.match(name):
            os.remove(path)
            removed.append(path)
        elif os.path.isdir(path):
            entries = os.listdir(path)
            ours = [f for f in entries if _PART_RE.match(f) or _TEMP_RE.match(f)]
            if not ours:
                continue
            if MANIFEST in entries:
                try:
                    manifest = _read_manifest(path)
                except SnapshotError:
                    continue  # damaged manifest: keep everything for inspection
                removed.extend(os.path.join(path, f) for f in _remove_unreferenced(path, manifest))
            else:
                for f in ours:
                    os.remove(os.path.join(path, f))
                    removed.append(os.path.join(path, f))
                if not os.listdir(path):
                    os.rmdir(path)
    if removed:
        logger.warning("removed %d file(s) left by an interrupted save: %s", len(removed), ", ".join(removed))
    return removed
