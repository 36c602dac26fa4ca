"""Training snapshots: model ``.pdparams`` + optimizer/schedule/progress ``.pdopt``, written atomically.

Paddle names optimizer accumulators after *internal* parameter names (``conv2d_12.w_0_velocity_0``),
which depend on how many layers the process created before. We store them under the parameters'
structured names instead, so a snapshot resumes in any process.
"""
import logging
import os

import numpy as np

from ..utils.io import atomic_write
from .checkpoint import load_state_file, load_weights, save_state_file

__all__ = ["save_snapshot", "load_snapshot", "snapshot_paths"]

logger = logging.getLogger(__name__)

_SCHED_KEY = "LR_Scheduler"


def snapshot_paths(prefix):
    """``output/x/3`` or ``output/x/3.pdparams`` -> (``.pdparams`` path, ``.pdopt`` path)."""
    for ext in (".pdparams", ".pdopt"):
        if prefix.endswith(ext):
            prefix = prefix[: -len(ext)]
    return prefix + ".pdparams", prefix + ".pdopt"


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


def _optimizer_state_internal(model, stored):
    structured_to_internal = {name: p.name for name, p in model.named_parameters()}
    out = {}
    for key, value in stored.items():
        if key.startswith("param/"):
            name, suffix = key[len("param/"):].split("\t", 1)
            if name not in structured_to_internal:
                raise KeyError("optimizer state refers to parameter {!r}, which the model does not have".format(name))
            out[structured_to_internal[name] + suffix] = value
        elif key.startswith("__raw__/"):
            out[key[len("__raw__/"):]] = value
    return out


def save_snapshot(prefix, model, optimizer, progress):
    """Write ``prefix.pdparams`` (model) and ``prefix.pdopt`` (optimizer, schedule, ``progress`` dict)."""
    params_path, opt_path = snapshot_paths(prefix)
    save_state_file(params_path, model.state_dict())
    sched = optimizer._learning_rate
    state = {
        "optimizer": _optimizer_state_structured(model, optimizer),
        _SCHED_KEY: sched.state_dict() if hasattr(sched, "state_dict") else {},
        "progress": dict(progress),
        "last_epoch": int(progress.get("epoch", 0)),
    }
    _save_pickle(opt_path, state)
    return params_path


def _save_pickle(path, obj):
    import pickle

    with atomic_write(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def _load_pickle(path):
    from .checkpoint import _SafeUnpickler  # same restrictions as weights

    if not os.path.isfile(path):
        raise FileNotFoundError("optimizer state not found: {} (resume needs both .pdparams and .pdopt)".format(path))
    with open(path, "rb") as f:
        return _SafeUnpickler(f, path).load()


def load_snapshot(prefix, model, optimizer=None):
    """Restore model (strict) and, if given, optimizer + schedule; return the stored progress dict."""
    params_path, opt_path = snapshot_paths(prefix)
    load_weights(model, params_path, state=load_state_file(params_path))
    state = _load_pickle(opt_path)
    if not isinstance(state, dict) or "optimizer" not in state:
        raise ValueError("{} is not a ppdet_htc training snapshot (no 'optimizer' entry)".format(opt_path))
    if optimizer is not None:
        opt_state = {k: np.asarray(v) if isinstance(v, np.ndarray) else v
                     for k, v in _optimizer_state_internal(model, state["optimizer"]).items()}
        if state.get(_SCHED_KEY):
            opt_state[_SCHED_KEY] = dict(state[_SCHED_KEY])  # restores the schedule's step as well
        optimizer.set_state_dict(opt_state)
    logger.info("resumed from %s (%s)", params_path, state.get("progress"))
    return state.get("progress", {"epoch": state.get("last_epoch", 0)})
