"""Reading and writing ``.pdparams`` checkpoints safely, and loading them into a model.

A ``.pdparams`` file is a pickle. Unpickling can run arbitrary code, so we use a restricted
unpickler that only admits what Paddle writes for a state dict: numpy arrays (``_reconstruct``,
``ndarray``, ``dtype``, ``scalar``) inside dicts/lists/tuples. Anything else is refused with an error
naming the offending global, before it is called.

``checkpoint_format`` tells the kinds of weight file apart by their content (Paddle pickle, ``.npz``,
PyTorch zip or legacy), and ``verify_checkpoint_file`` checks that a file is a complete checkpoint of a
known kind (the download cache uses it before a file gets its final name). A PyTorch file given where a
``.pdparams`` is expected is refused with a pointer to the converter (``ppdet-htc-convert-mmdet``).

Loading into a model has two modes, as in PaddleDetection:
* ``load_weights`` (``weights=``, evaluation/inference/resume): names must match exactly; every
  missing, unexpected or wrongly shaped key is reported and is an error.
* ``load_pretrained`` (``pretrain_weights=``, training init): a checkpoint key also matches a model key
  that ends with it (``res2.res2a...`` -> ``backbone.res2.res2a...``, the longest match wins); keys
  that do not fit are listed in a warning, and the model keeps its initial values for them.
In both modes a checkpoint value of the wrong kind (an integer tensor for a float parameter) or with
NaN/inf values is an error naming the keys: such a model would run, silently wrong.
"""
import io
import logging
import os
import pickle
import zipfile

import numpy as np

from ..utils.io import atomic_write

__all__ = [
    "UnsafeCheckpointError",
    "CheckpointError",
    "CheckpointMismatchError",
    "CONVERTER_HINT",
    "checkpoint_format",
    "describe_content",
    "verify_checkpoint_file",
    "load_state_file",
    "save_state_file",
    "load_weights",
    "load_pretrained",
    "match_state_dict",
    "check_values",
]

logger = logging.getLogger(__name__)

_NAME_MAP_KEY = "StructuredToParameterName@@"
CONVERTER_HINT = ("convert it first with `ppdet-htc-convert-mmdet --src {path} --config <config.yml> --out "
                  "<name>.pdparams` (scripts/convert_mmdet.py), or use the model-zoo name of an mmdetection model")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file references a Python object that could execute code; it was not loaded."""


class CheckpointError(ValueError):
    """The file is not a readable state dict."""


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model; ``report`` lists missing/unexpected/shape problems."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


def _numpy_reconstruct():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _allowed_globals():
    ma = _numpy_reconstruct()
    allowed = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ma._reconstruct
        allowed[(mod, "scalar")] = ma.scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("collections", "OrderedDict")] = __import__("collections").OrderedDict
    for name in ("tuple", "list", "dict", "set", "frozenset"):
        allowed[("builtins", name)] = getattr(__import__("builtins"), name)
        allowed[("__builtin__", name)] = getattr(__import__("builtins"), name)
    return allowed


class _SafeUnpickler(pickle.Unpickler):
    _allowed = None

    def __init__(self, f, source):
        super().__init__(f)
        self._source = source
        if _SafeUnpickler._allowed is None:
            _SafeUnpickler._allowed = _allowed_globals()

    def find_class(self, module, name):
        obj = self._allowed.get((module, name))
        if obj is None:
            raise UnsafeCheckpointError(
                "refusing to load {}: it references {}.{}, which could execute code when unpickled. "
                "A .pdparams file should only contain numpy arrays; if you trust and need this file, "
                "convert it to a plain {{name: array}} dict first".format(self._source, module, name)
            )
        return obj

    def persistent_load(self, pid):
        raise UnsafeCheckpointError("refusing to load {}: persistent ids are not allowed".format(self._source))


def _as_array(key, value, source):
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray):
        value = value[1]  # older Paddle: (internal_name, array)
    if isinstance(value, np.ndarray):
        if value.dtype == np.float16:
            value = value.astype(np.float32)
        return value
    if isinstance(value, (np.generic, int, float)):
        return np.asarray(value)
    raise CheckpointError("{}: entry {!r} is a {}, expected a numpy array".format(source, key, type(value).__name__))


def checkpoint_format(path):
    """Tell weight files apart by content: ``'pdparams'`` (a pickle), ``'npz'``, ``'torch_zip'``,
    ``'torch_legacy'``, ``'zip'`` (an archive that cannot be opened: truncated), ``'empty'`` or ``'unknown'``.
    Reads only the head (and a zip's name list)."""
    from .torch_checkpoint import torch_file_format

    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        torch_fmt = torch_file_format(path)
        if torch_fmt is not None:
            return "torch_" + torch_fmt
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return "zip"
        return "npz" if names and all(n.endswith(".npy") for n in names) else "unknown"
    torch_fmt = torch_file_format(path)
    if torch_fmt is not None:
        return "torch_" + torch_fmt
    if head[:1] == b"\x80":  # a pickle with a protocol header, as paddle.save writes
        return "pdparams"
    return "unknown"


def describe_content(path, limit=40):
    """A short description of what a file holds, for errors about files that are not checkpoints."""
    with open(path, "rb") as f:
        head = f.read(512)
    size = os.path.getsize(path)
    if not head:
        return "an empty file (0 bytes)"
    text = head.lstrip().lower()
    if text.startswith(b"<!doctype html") or text.startswith(b"<html") or b"<html" in text[:200]:
        kind = "an HTML page"
    elif text.startswith(b"<?xml") or text.startswith(b"<"):
        kind = "an XML/HTML document"
    elif text[:1] in (b"{", b"["):
        kind = "JSON text"
    elif all(32 <= c < 127 or c in (9, 10, 13) for c in head[:200]):
        kind = "text"
    else:
        kind = "binary data"
    preview = head[:limit].decode("latin-1").encode("unicode_escape").decode("ascii")
    return "{} of {} bytes starting with '{}'".format(kind, size, preview)


def verify_checkpoint_file(path):
    """Raise ``CheckpointError`` unless ``path`` is a complete checkpoint of a known kind; return the kind.

    ``.pdparams`` pickles are read with the restricted unpickler, ``.npz`` archives are CRC-checked and every
    array is read, PyTorch files are parsed and their storages checked (``check_torch_file``).
    """
    fmt = checkpoint_format(path)
    if fmt in ("torch_zip", "torch_legacy"):
        from .torch_checkpoint import check_torch_file

        check_torch_file(path)
    elif fmt == "npz":
        _load_npz(path)
    elif fmt == "zip":
        _raise_broken_zip(path)
    elif fmt == "pdparams":
        _load_pickle(path)
    else:
        raise CheckpointError("{} is not a checkpoint (.pdparams, .pth or .npz): it is {}".format(
            path, describe_content(path)))
    return fmt


def _raise_broken_zip(path):
    try:
        zipfile.ZipFile(path).close()
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError("{} is not a complete zip archive ({}); the file is truncated or corrupt".format(
            path, _one_line(e))) from None
    raise CheckpointError("{} is a zip archive but neither an .npz nor a PyTorch checkpoint".format(path))


def _one_line(err):
    text = str(err).splitlines()[0] if str(err) else ""
    name = {"EOFError": "the data ends early"}.get(type(err).__name__, type(err).__name__)
    return "{} ({})".format(name, text) if text else name


def _load_npz(path):
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            raise CheckpointError("{} is corrupt: member {} fails its CRC check".format(path, bad))
        with np.load(path, allow_pickle=False) as data:
            return {k: _as_array(k, data[k], path) for k in data.files}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError("cannot read {} as .npz: {}; the file is truncated or corrupt".format(
            path, _one_line(e))) from None


def _load_pickle(path):
    with open(path, "rb") as f:
        raw = f.read()
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), path).load()
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure inside pickle means the bytes are not a whole pickle
        raise CheckpointError("cannot read checkpoint {}: {}; the file is truncated or corrupt".format(
            path, _one_line(e))) from None
    if not isinstance(obj, dict):
        raise CheckpointError("{}: expected a dict of arrays, got {}".format(path, type(obj).__name__))
    state = {}
    for k, v in obj.items():
        if k == _NAME_MAP_KEY or k == "UnpackBigParamInfor@@":
            continue
        state[k] = _as_array(k, v, path)
    return state


def load_state_file(path):
    """Read ``{name: np.ndarray}`` from a ``.pdparams`` (safe pickle) or ``.npz`` file.

    float16 arrays (compact bundled checkpoints) are cast to float32. A PyTorch file is refused with a
    pointer to the converter; empty, truncated and foreign files raise a one-line ``CheckpointError``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError("checkpoint not found: {}".format(path))
    fmt = checkpoint_format(path)
    if fmt == "empty":
        raise CheckpointError("checkpoint {} is empty (0 bytes); delete it and download or save it again".format(path))
    if fmt.startswith("torch_"):
        raise CheckpointError("{} is a PyTorch checkpoint ({} format), not a Paddle .pdparams file; {}".format(
            path, fmt[len("torch_"):], CONVERTER_HINT.format(path=path)))
    if fmt == "zip":
        _raise_broken_zip(path)
    if fmt == "npz":
        return _load_npz(path)
    if fmt == "unknown":
        raise CheckpointError("{} is not a checkpoint (.pdparams or .npz): it is {}".format(
            path, describe_content(path)))
    return _load_pickle(path)


def save_state_file(path, state, dtype=None):
    """Write ``{name: array or tensor}`` as a Paddle-compatible ``.pdparams`` atomically.

    ``dtype='float16'`` stores floating point arrays in half precision (cast back when loading).
    """
    arrays = {}
    for k, v in state.items():
        a = v.numpy() if hasattr(v, "numpy") else np.asarray(v)
        if dtype is not None and np.issubdtype(a.dtype, np.floating):
            a = a.astype(dtype)
        arrays[k] = a
    with atomic_write(path, "wb") as f:
        pickle.dump(arrays, f, protocol=4)
    return path


def _model_shapes(model):
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def _format_report(report, limit=20, titles=None):
    titles = dict({"missing": "missing in checkpoint", "unexpected": "unexpected in checkpoint",
                   "shape": "shape mismatch"}, **(titles or {}))
    lines = []
    for title, items in ((titles["missing"], report["missing"]),
                         (titles["unexpected"], report["unexpected"]),
                         (titles["shape"], report["shape"])):
        if not items:
            continue
        lines.append("  {} ({}):".format(title, len(items)))
        for it in items[:limit]:
            if isinstance(it, tuple):
                lines.append("    {}: checkpoint {} vs model {}".format(*it))
            else:
                lines.append("    " + it)
        if len(items) > limit:
            lines.append("    ... and {} more".format(len(items) - limit))
    return "\n".join(lines)


def _semantic_hint(report):
    missing_sem = [k for k in report["missing"] if k.startswith("fused_semantic_head.")]
    unexpected_sem = [k for k in report["unexpected"] if k.startswith("fused_semantic_head.")]
    if missing_sem:
        return ("\nThe config has a FusedSemanticHead but the checkpoint has no semantic-head weights "
                "(e.g. the official PaddleDetection checkpoint). Use "
                "configs/htc/htc_without_semantic_r50_fpn_1x_coco.yml or set "
                "-o HybridTaskCascade.fused_semantic_head=null.")
    if unexpected_sem:
        return ("\nThe checkpoint has semantic-head weights but the config has no FusedSemanticHead; "
                "use a config with the semantic head (configs/htc/htc_r50_fpn_1x_coco.yml).")
    return ""


def load_weights(model, path, state=None):
    """Load a checkpoint whose names and shapes match the model exactly (else raise with a report)."""
    state = load_state_file(path) if state is None else state
    shapes = _model_shapes(model)
    report = {
        "missing": sorted(k for k in shapes if k not in state),
        "unexpected": sorted(k for k in state if k not in shapes),
        "shape": sorted((k, list(state[k].shape), shapes[k]) for k in shapes
                        if k in state and list(state[k].shape) != shapes[k]),
    }
    if report["missing"] or report["unexpected"] or report["shape"]:
        raise CheckpointMismatchError(
            "checkpoint {} does not match the model:\n{}{}".format(path, _format_report(report), _semantic_hint(report)),
            report,
        )
    check_values(state, _model_kinds(model), path)
    _assign(model, state)
    return report


def _model_kinds(model):
    """``{key: numpy dtype}`` of the model's parameters and buffers."""
    return {k: np.dtype(_np_dtype(v.dtype)) for k, v in model.state_dict().items()}


def _name_list(items, limit=20):
    shown = ", ".join(items[:limit])
    return shown + (" ... and {} more".format(len(items) - limit) if len(items) > limit else "")


def check_values(arrays, model_dtypes, source, names=None):
    """Refuse values that would load but make a silently wrong model; the error names every key.

    ``arrays``: ``{model key: array}``; ``model_dtypes``: ``{model key: numpy dtype}``; ``names`` maps a model
    key to the checkpoint's own name for it (when they differ). Problems: an integer/bool/complex tensor
    for a floating point parameter (or a float for an integer buffer), NaN or inf values.
    """
    names = names or {}
    wrong, nonfinite = [], []
    for key, value in arrays.items():
        a = np.asarray(value)
        want = model_dtypes.get(key)
        ckpt_key = names.get(key, key)
        label = key if ckpt_key == key else "{} (model {})".format(ckpt_key, key)
        if want is not None and (want.kind == "f") != (a.dtype.kind == "f"):
            wrong.append("{}: {} for a {} parameter".format(label, a.dtype, want))
        elif a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            nonfinite.append("{} ({} of {} values)".format(label, bad, a.size))
    problems = []
    if wrong:
        problems.append("{} tensor(s) of the wrong dtype: {}".format(len(wrong), _name_list(wrong)))
    if nonfinite:
        problems.append("{} tensor(s) with NaN or inf values: {}".format(len(nonfinite), _name_list(nonfinite)))
    if problems:
        raise CheckpointError("checkpoint {} is unusable: {}".format(source, "; ".join(problems)))


def match_state_dict(model_shapes, state):
    """Suffix matching of checkpoint keys to model keys (PaddleDetection's ``load_pretrain_weight``).

    For each model key the candidates are checkpoint keys equal to it or equal to one of its
    dot-separated suffixes; the longest wins. Returns ``(matched {model_key: ckpt_key}, report)``.
    """
    by_suffix = {}
    for mk in model_shapes:
        parts = mk.split(".")
        for i in range(len(parts)):
            by_suffix.setdefault(".".join(parts[i:]), []).append(mk)
    matched, shape_skip, used = {}, [], set()
    owner = {}
    for ck in state:
        for mk in by_suffix.get(ck, []):
            prev = matched.get(mk)
            if prev is None or len(ck) > len(prev):
                matched[mk] = ck
    for mk, ck in list(matched.items()):
        if ck in owner and owner[ck] != mk:
            raise CheckpointError("checkpoint key {!r} matches two model keys: {} and {}".format(ck, owner[ck], mk))
        owner[ck] = mk
        if list(state[ck].shape) != list(model_shapes[mk]):
            shape_skip.append((mk, list(state[ck].shape), list(model_shapes[mk])))
            del matched[mk]
        else:
            used.add(ck)
    report = {
        "missing": sorted(k for k in model_shapes if k not in matched and k not in {s[0] for s in shape_skip}),
        "unexpected": sorted(k for k in state if k not in used and k not in owner),
        "shape": sorted(shape_skip),
    }
    return matched, report


def load_pretrained(model, path, state=None):
    """Initialise the model from a checkpoint leniently; returns the report (also logged)."""
    state = load_state_file(path) if state is None else state
    matched, report = match_state_dict(_model_shapes(model), state)
    if not matched:
        raise CheckpointMismatchError(
            "pretrain_weights {}: no key matches the model; is this a checkpoint for this architecture?\n{}".format(
                path, _format_report(report)), report)
    arrays = {mk: state[ck] for mk, ck in matched.items()}
    check_values(arrays, _model_kinds(model), path, names=matched)
    _assign(model, arrays)
    msg = _format_report(report)
    if msg:
        logger.warning("pretrain_weights %s: loaded %d of %d model tensors; the rest keep their initial values\n%s",
                       path, len(matched), len(_model_shapes(model)), msg)
    else:
        logger.info("pretrain_weights %s: loaded all %d model tensors", path, len(matched))
    report["loaded"] = sorted(matched)
    return report


def _assign(model, arrays):
    """Copy arrays into the model's parameters and buffers, casting to each tensor's dtype."""
    import paddle

    target = model.state_dict()
    with paddle.no_grad():
        for k, a in arrays.items():
            t = target[k]
            t.set_value(np.asarray(a).astype(_np_dtype(t.dtype), copy=False))


def _np_dtype(dtype):
    """numpy dtype of a Paddle dtype (``paddle.float32`` -> float32; bfloat16 -> float32)."""
    name = str(dtype).split(".")[-1].lower()
    if name in ("bfloat16", "bf16"):
        return np.float32
    try:
        return np.dtype(name).type
    except TypeError:
        return np.float32
