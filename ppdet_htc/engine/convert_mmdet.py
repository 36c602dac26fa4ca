"""Convert mmdetection HTC weights (``.pth`` in either PyTorch format, or ``.npz``/``.pdparams`` holding
mmdetection's key names) into a ``.pdparams`` for the model of a config.

Every mmdetection key is mapped by rule (the table below), Linear weights are
transposed (PyTorch ``[out, in]`` -> Paddle ``[in, out]``), ``num_batches_tracked`` is dropped, and the result
must cover the model exactly: mmdetection keys without a target, model keys without a source and shape
mismatches are one error that lists them by name. Values must be finite floating point numbers.

=========================================================  ====================================================
mmdetection                                                ppdet_htc
=========================================================  ====================================================
backbone.conv1 / bn1                                       backbone.conv1.conv1.conv / .norm
backbone.layer{s}.{b}.conv{1,2,3} / bn{1,2,3}              backbone.res{s+1}.<block>.branch2{a,b,c}.conv / .norm
backbone.layer{s}.0.downsample.{0,1}                       backbone.res{s+1}.<block>.short.conv / .norm
backbone.layer{s}.{b}.conv2.conv_offset (or conv2_offset)  backbone.res{s+1}.<block>.branch2b.conv.conv_offset
neck.lateral_convs.{i}.conv / fpn_convs.{i}.conv           neck.fpn_inner_res{i+2}_sum_lateral (res5: _sum) /
                                                           neck.fpn_res{i+2}_sum
rpn_head.rpn_conv / rpn_cls / rpn_reg                      rpn_head.rpn_feat.rpn_conv / rpn_rois_score /
                                                           rpn_rois_delta
roi_head.bbox_head.{t}.shared_fcs.{0,1} / fc_cls / fc_reg  bbox_head.head.{t}.fc6 / fc7, bbox_head.bbox_score_stage{t}
                                                           / bbox_delta_stage{t} (Linear: transposed)
roi_head.mask_head.{t}.<convs.i.conv|upsample|conv_logits  bbox_head.mask_head.head.{t}.<same>
|conv_res.conv>
roi_head.semantic_head.<lateral_convs.i.conv|convs.i.conv> fused_semantic_head.<same>; conv_embedding.conv ->
                                                           conv_embedding; conv_logits -> conv_logits
=========================================================  ====================================================
"""
import collections
import logging
import os
import re

import numpy as np

from ..errors import UsageError
from .checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    _format_report,
    check_values,
    checkpoint_format,
    load_state_file,
    save_state_file,
)

__all__ = [
    "ConversionError",
    "convert_mmdet_checkpoint",
    "convert_state_dict",
    "map_mmdet_keys",
    "model_param_specs",
    "read_mmdet_weights",
]

logger = logging.getLogger(__name__)

_BN = {"weight": "weight", "bias": "bias", "running_mean": "_mean", "running_var": "_variance"}
_BRANCH = {"1": "branch2a", "2": "branch2b", "3": "branch2c"}
_WB = r"(weight|bias)"
_BNP = r"(weight|bias|running_mean|running_var)"


_TITLES = {"missing": "model keys without a source", "unexpected": "mmdetection keys without a target",
           "shape": "shape mismatch (mmdetection, after transposition, vs model)"}


class ConversionError(CheckpointMismatchError):
    """The mmdetection weights do not fit the config's model; ``report`` names every key at fault."""


def _block_names(keys):
    """``{(layer, index): block name}`` for the backbone blocks present, named as ``ResNet`` names them."""
    from ..modeling.backbones.resnet import _block_name

    counts = collections.Counter()
    for key in keys:
        m = re.match(r"backbone\.layer(\d+)\.(\d+)\.", key)
        if m:
            layer, index = int(m.group(1)), int(m.group(2))
            counts[layer] = max(counts[layer], index + 1)
    return {(layer, i): _block_name(layer + 1, n, i) for layer, n in counts.items() for i in range(n)}


def _backbone_target(key, blocks):
    m = re.fullmatch(r"backbone\.conv1\.weight", key)
    if m:
        return "backbone.conv1.conv1.conv.weight"
    m = re.fullmatch(r"backbone\.bn1\." + _BNP, key)
    if m:
        return "backbone.conv1.conv1.norm." + _BN[m.group(1)]
    m = re.fullmatch(r"backbone\.layer([1-4])\.(\d+)\.(.+)", key)
    if not m:
        return None
    layer, index, rest = int(m.group(1)), int(m.group(2)), m.group(3)
    block = "backbone.res{}.{}.".format(layer + 1, blocks[(layer, index)])
    sub = re.fullmatch(r"conv([123])\.weight", rest)
    if sub:
        return block + _BRANCH[sub.group(1)] + ".conv.weight"
    sub = re.fullmatch(r"bn([123])\." + _BNP, rest)
    if sub:
        return block + _BRANCH[sub.group(1)] + ".norm." + _BN[sub.group(2)]
    sub = re.fullmatch(r"downsample\.0\.weight", rest)
    if sub:
        return block + "short.conv.weight"
    sub = re.fullmatch(r"downsample\.1\." + _BNP, rest)
    if sub:
        return block + "short.norm." + _BN[sub.group(1)]
    sub = re.fullmatch(r"conv2(?:\.conv_offset|_offset)\." + _WB, rest)
    if sub:
        return block + "branch2b.conv.conv_offset." + sub.group(1)
    return None


def _head_target(key):
    """Target of a neck/RPN/RoI-head key: ``(name, transpose)`` or None."""
    m = re.fullmatch(r"neck\.lateral_convs\.([0-3])\.conv\." + _WB, key)
    if m:
        stage = int(m.group(1))
        name = "fpn_inner_res5_sum" if stage == 3 else "fpn_inner_res{}_sum_lateral".format(stage + 2)
        return "neck.{}.{}".format(name, m.group(2)), False
    m = re.fullmatch(r"neck\.fpn_convs\.([0-3])\.conv\." + _WB, key)
    if m:
        return "neck.fpn_res{}_sum.{}".format(int(m.group(1)) + 2, m.group(2)), False
    m = re.fullmatch(r"rpn_head\.(rpn_conv|rpn_cls|rpn_reg)\." + _WB, key)
    if m:
        name = {"rpn_conv": "rpn_feat.rpn_conv", "rpn_cls": "rpn_rois_score", "rpn_reg": "rpn_rois_delta"}
        return "rpn_head.{}.{}".format(name[m.group(1)], m.group(2)), False
    m = re.fullmatch(r"roi_head\.bbox_head\.(\d+)\.(shared_fcs\.[01]|fc_cls|fc_reg)\." + _WB, key)
    if m:
        stage, part, param = m.groups()
        name = {"shared_fcs.0": "head.{}.fc6", "shared_fcs.1": "head.{}.fc7", "fc_cls": "bbox_score_stage{}",
                "fc_reg": "bbox_delta_stage{}"}[part].format(stage)
        return "bbox_head.{}.{}".format(name, param), param == "weight"
    m = re.fullmatch(r"roi_head\.mask_head\.(\d+)\.(convs\.\d+\.conv|upsample|conv_logits|conv_res\.conv)\." + _WB,
                     key)
    if m:
        return "bbox_head.mask_head.head.{}.{}.{}".format(*m.groups()), False
    m = re.fullmatch(r"roi_head\.semantic_head\.((?:lateral_convs|convs)\.\d+\.conv)\." + _WB, key)
    if m:
        return "fused_semantic_head.{}.{}".format(*m.groups()), False
    m = re.fullmatch(r"roi_head\.semantic_head\.(conv_embedding\.conv|conv_logits)\." + _WB, key)
    if m:
        return "fused_semantic_head.{}.{}".format(m.group(1).split(".")[0], m.group(2)), False
    return None


def map_mmdet_keys(keys):
    """Map mmdetection state-dict keys to this package's names.

    Returns ``(mapping, dropped, unmatched)``: ``mapping`` is an ordered ``{mmdet key: (target, transpose)}``;
    ``dropped`` the ``num_batches_tracked`` counters; ``unmatched`` the keys no rule covers. Two source
    keys for one target (``conv2.conv_offset`` and ``conv2_offset``) are an error.
    """
    keys = list(keys)
    blocks = _block_names(keys)
    mapping, dropped, unmatched, owner = collections.OrderedDict(), [], [], {}
    for key in keys:
        if key.endswith(".num_batches_tracked"):
            dropped.append(key)
            continue
        target = _backbone_target(key, blocks)
        found = (target, False) if target is not None else _head_target(key)
        if found is None:
            unmatched.append(key)
            continue
        if found[0] in owner:
            raise CheckpointError("mmdetection keys {} and {} both map to {}".format(owner[found[0]], key, found[0]))
        owner[found[0]] = key
        mapping[key] = found
    return mapping, dropped, unmatched


def convert_state_dict(mmdet_state, model_specs, source="mmdetection weights"):
    """Turn ``{mmdet key: array}`` into ``{model key: array}`` (model order, model dtypes).

    ``model_specs``: ``{model key: (shape list, numpy dtype)}`` (see ``model_param_specs``). Raises
    ``ConversionError`` naming every unmatched key and shape mismatch, ``CheckpointError`` for
    integer tensors given for float parameters and NaN/inf values.
    """
    mapping, dropped, unmatched = map_mmdet_keys(mmdet_state)
    converted, names, shape_bad = {}, {}, []
    for src, (dst, transpose) in mapping.items():
        if dst not in model_specs:
            unmatched.append("{} (-> {}, which the model does not have)".format(src, dst))
            continue
        names[dst] = src
        value = np.asarray(mmdet_state[src])
        want = list(model_specs[dst][0])
        if transpose and value.ndim != 2:
            shape_bad.append(("{} -> {}".format(src, dst), list(value.shape), want))
            continue
        value = value.T if transpose else value
        if list(value.shape) != want:
            shape_bad.append(("{} -> {}{}".format(src, dst, " (transposed)" if transpose else ""),
                              list(value.shape), want))
            continue
        converted[dst] = value
    missing = [k for k in model_specs if k not in names]
    report = {"unexpected": unmatched, "missing": missing, "shape": shape_bad}
    if unmatched or missing or shape_bad:
        raise ConversionError(
            "cannot convert {} into the config's model: {} mmdetection key(s) without a target, {} model key(s) "
            "without a source, {} shape mismatch(es):\n{}".format(
                source, len(unmatched), len(missing), len(shape_bad),
                _format_report(report, limit=40, titles=_TITLES)),
            report)
    check_values(converted, {k: np.dtype(spec[1]) for k, spec in model_specs.items()}, source, names=names)
    out = collections.OrderedDict()
    for key, (_shape, dtype) in model_specs.items():
        out[key] = np.ascontiguousarray(converted[key], dtype=dtype)
    logger.info("converted %d tensors from %s (%d num_batches_tracked dropped)", len(out), source, len(dropped))
    return out


def read_mmdet_weights(paths):
    """Read one or more weight files holding mmdetection names; return ``(OrderedDict, meta)``.

    A ``.pth`` (zip or legacy; ``{'meta', 'state_dict'}`` or a bare state dict), an ``.npz`` or a ``.pdparams``.
    Several files are merged (e.g. golden_visible's weights + semantic head); a key in two files is an error.
    """
    from .torch_checkpoint import read_torch_state_dict

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    state, meta, origin = collections.OrderedDict(), None, {}
    for path in paths:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError("mmdetection weights not found: {}".format(path))
        fmt = checkpoint_format(path)
        if fmt.startswith("torch_"):
            part, part_meta = read_torch_state_dict(path)
            meta = meta if meta is not None else part_meta
        else:
            part = load_state_file(path)
        for key, value in part.items():
            if key in state:
                raise CheckpointError("{} holds {!r}, which {} holds too".format(path, key, origin[key]))
            state[key], origin[key] = value, path
    return state, meta


def model_param_specs(config, overrides=None):
    """``{key: (shape, numpy dtype)}`` of the model a config builds, without initialising its weights.

    The caller's global config and random state are left as they were (conversion may run inside a
    training or inference process that resolves a model-zoo name).
    """
    import paddle

    from ..core import load_config
    from ..core.config import global_config, set_global_config
    from .checkpoint import _np_dtype
    from .model_builder import build_model

    previous = global_config()
    try:
        cfg = load_config(config, overrides)
        if hasattr(paddle, "LazyGuard"):  # parameters get shapes, not values: fast, and no random numbers drawn
            with paddle.LazyGuard():
                model = build_model(cfg)
        else:  # pragma: no cover - very old Paddle
            model = build_model(cfg)
        return collections.OrderedDict(
            (k, (list(v.shape), np.dtype(_np_dtype(v.dtype)))) for k, v in model.state_dict().items())
    finally:
        set_global_config(previous)


def convert_mmdet_checkpoint(src, config, out, overrides=None):
    """Convert mmdetection weights ``src`` (a path or a list of paths) for ``config``; write ``out`` atomically.

    Returns a summary dict: ``out``, ``tensors``, ``sources``, ``meta`` (the .pth's ``meta``, if any).
    """
    sources = [src] if isinstance(src, (str, os.PathLike)) else list(src)
    out = os.fspath(out)
    for path in sources:
        if os.path.abspath(os.fspath(path)) == os.path.abspath(out):
            raise UsageError("--out {} would overwrite the source file; choose another name".format(out))
    mmdet_state, meta = read_mmdet_weights(sources)
    specs = model_param_specs(config, overrides)
    label = " + ".join(os.fspath(p) for p in sources)
    state = convert_state_dict(mmdet_state, specs, source=label)
    save_state_file(out, state)
    return {"out": out, "tensors": len(state), "sources": [os.fspath(p) for p in sources], "meta": meta}
