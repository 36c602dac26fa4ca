"""YAML configs in PaddleDetection's format: ``_BASE_`` includes, ``!Tag`` objects, ``-o`` overrides.

A config is a nested dict. Top-level keys named after a registered class hold that class's
constructor arguments; other top-level keys are global settings (``weights``, ``epoch``, readers...).
Every key remembers the file it came from, so a misspelt key or a wrong type is reported with the
file, the key, the expected type and the closest valid names.
"""
import copy
import inspect
import logging
import os
import re
import typing

import yaml

from ..errors import ConfigError
from ..utils.resources import find_config
from . import registry
from .registry import closest, constructor_params, lookup

__all__ = [
    "AttrDict",
    "TaggedDict",
    "Config",
    "ConfigError",
    "load_config",
    "merge_config",
    "parse_overrides",
    "create",
    "global_config",
    "set_global_config",
    "declare_global_keys",
    "build_nested",
    "build_component",
]

logger = logging.getLogger(__name__)
inspect_empty = inspect.Parameter.empty


class AttrDict(dict):
    """A dict whose keys can also be read as attributes (``cfg.num_classes``)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value

    def __deepcopy__(self, memo):
        new = self.__class__.__new__(self.__class__)
        dict.__init__(new)
        for attr, val in self.__dict__.items():
            object.__setattr__(new, attr, copy.deepcopy(val, memo))
        for k, v in self.items():
            dict.__setitem__(new, k, copy.deepcopy(v, memo))
        return new


class TaggedDict(AttrDict):
    """The value of a ``!ClassName {...}`` YAML node: constructor arguments plus the class name.

    Tagged objects are built lazily (``create(tagged)``) so ``-o`` can still override their keys.
    """

    def __init__(self, tag, *args, **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "tag", tag)

    def __repr__(self):
        return "!{} {}".format(self.tag, dict.__repr__(self))


class Config(AttrDict):
    """The merged configuration plus, for every key path, the file that set it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "sources", {})
        object.__setattr__(self, "path", None)

    def source_of(self, *path):
        """Where the key at ``path`` (e.g. ``('RPNHead', 'anchor_generator')``) was set."""
        path = tuple(path)
        while path:
            if path in self.sources:
                return self.sources[path]
            path = path[:-1]
        return self.path or "<config>"


# Global settings PaddleDetection configs may contain at the top level (besides class sections).
_GLOBAL_KEYS = {
    "architecture", "num_classes", "metric", "weights", "pretrain_weights", "epoch", "worker_num",
    "use_gpu", "use_xpu", "use_mlu", "use_npu", "use_gcu", "log_iter", "save_dir", "snapshot_epoch",
    "print_flops", "print_params", "export", "norm_type", "find_unused_parameters", "use_ema",
    "ema_decay", "ema_decay_type", "ema_filter_no_grad", "cycle_epoch", "use_vdl", "vdl_log_dir",
    "save_prediction_only", "amp", "amp_level", "fp16", "master_grad", "sync_bn", "seed",
    "log_ranks", "filename", "mask_resolution", "num_cascade_stages", "draw_threshold",
    "TrainReader", "EvalReader", "TestReader", "TrainDataset", "EvalDataset", "TestDataset",
    "LearningRate", "OptimizerBuilder", "classwise", "output_eval", "max_iters",
    "label_list",  # class names in label order, so inference needs no dataset
}


def declare_global_keys(*keys):
    """Let a module declare extra top-level keys that are valid settings."""
    _GLOBAL_KEYS.update(keys)


_GLOBAL = [Config()]
_BUILDING = []  # stack of configs being used by create() (so from_config can create children)


def global_config():
    """The config loaded last (PaddleDetection's global workspace)."""
    return _GLOBAL[0]


def set_global_config(cfg):
    _GLOBAL[0] = cfg
    return cfg


# --------------------------------------------------------------------------------------------
# YAML loading
# --------------------------------------------------------------------------------------------


class _NumberLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4``, ``1e6``, ``-1e-5``, ``1.5e3`` as floats.

    PyYAML implements YAML 1.1, whose float pattern needs a dot and a signed exponent, so it returns such
    values as *strings*; YAML 1.2 (and every user) reads them as numbers. Ints, YAML 1.1 floats, dates and
    strings resolve as before: this resolver is consulted only after the built-in ones.
    """


_NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _make_loader(filename):
    class _Loader(_NumberLoader):
        pass

    def construct_tagged(loader, suffix, node):
        if not registry.is_serializable(suffix):
            hint = closest(suffix, [n for n in registry.get_registered() if registry.is_serializable(n)])
            raise ConfigError(
                "{}:{}: unknown YAML tag !{}{}".format(
                    filename,
                    node.start_mark.line + 1,
                    suffix,
                    "; did you mean {}?".format(" / ".join("!" + h for h in hint)) if hint else "",
                )
            )
        if isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.ScalarNode) and loader.construct_scalar(node) in ("", None):
            value = {}
        else:
            raise ConfigError(
                "{}:{}: !{} must be followed by a mapping of arguments".format(
                    filename, node.start_mark.line + 1, suffix
                )
            )
        return TaggedDict(suffix, value)

    _Loader.add_multi_constructor("!", construct_tagged)
    return _Loader


def _read_yaml(path):
    if not os.path.isfile(path):
        raise ConfigError("config file not found: {}".format(path))
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.load(f, Loader=_make_loader(path))
        except yaml.YAMLError as e:
            raise ConfigError("{}: invalid YAML: {}".format(path, e)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("{}: a config file must be a mapping, got {}".format(path, type(data).__name__))
    return data


def _to_attr(obj):
    if isinstance(obj, TaggedDict):
        return TaggedDict(obj.tag, {k: _to_attr(v) for k, v in obj.items()})
    if isinstance(obj, dict):
        return AttrDict({k: _to_attr(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_to_attr(v) for v in obj]
    return obj


def _record_sources(data, source, sources, prefix=()):
    for k, v in data.items():
        path = prefix + (k,)
        sources[path] = source
        if isinstance(v, dict):
            _record_sources(v, source, sources, path)


def _merge(base, override):
    """Recursive dict merge: nested dicts merge key by key; lists and scalars are replaced."""
    for k, v in override.items():
        old = base.get(k)
        if isinstance(old, dict) and isinstance(v, dict):
            if isinstance(v, TaggedDict) and (not isinstance(old, TaggedDict) or old.tag != v.tag):
                base[k] = v  # a different class replaces the old one entirely
            else:
                _merge(old, v)
        else:
            base[k] = v
    return base


def _load_recursive(path, sources, stack):
    path = os.path.abspath(path)
    if path in stack:
        raise ConfigError("_BASE_ include cycle: {}".format(" -> ".join(stack + [path])))
    data = _read_yaml(path)
    bases = data.pop("_BASE_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list):
        raise ConfigError("{}: _BASE_ must be a list of file paths".format(path))
    merged = {}
    for b in bases:
        if not isinstance(b, str) or not b:
            raise ConfigError("{}: _BASE_ entries must be file paths, got {!r}".format(path, b))
        bpath, tried = find_config(b, relative_to=os.path.dirname(path))
        if bpath is None:
            raise ConfigError("{}: _BASE_ file {!r} not found; looked in: {}".format(path, b, ", ".join(tried)))
        _merge(merged, _load_recursive(bpath, sources, stack + [path]))
    _record_sources(data, path, sources)
    return _merge(merged, _to_attr(data))


def load_config(path, overrides=None, validate=True):
    """Load a YAML config with its ``_BASE_`` files, apply ``-o`` overrides, make it global.

    ``path`` is a file path, or the name of a packaged config (``configs/htc/htc_r50_fpn_1x_coco.yml`` or
    ``htc/htc_r50_fpn_1x_coco.yml``) usable from any directory; ``_BASE_`` entries resolve the same way,
    relative to the including file first. ``overrides`` is a dict (nested) or a list of ``"a.b=value"``
    strings.
    """
    found, tried = find_config(path)
    if found is None:
        raise ConfigError("config file {!r} not found; looked in: {}".format(os.fspath(path), ", ".join(tried)))
    path = found
    sources = {}
    data = _load_recursive(path, sources, [])
    cfg = Config(data)
    cfg.sources.update(sources)
    object.__setattr__(cfg, "path", os.path.abspath(path))
    cfg["filename"] = os.path.splitext(os.path.basename(path))[0]
    if overrides:
        merge_config(cfg, overrides)
    if validate:
        validate_top_level(cfg)
    set_global_config(cfg)
    return cfg


def parse_overrides(opts):
    """``["a=1", "B.c=[1,2]"]`` -> ``{'a': 1, 'B': {'c': [1, 2]}}`` (values parsed as YAML)."""
    result = {}
    for opt in opts or []:
        if "=" not in opt:
            raise ConfigError("-o option {!r} must look like key=value".format(opt))
        key, value = opt.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError("-o option {!r} has an empty key".format(opt))
        try:  # the config files' loader: same numbers, same !Tags
            parsed = yaml.load(value, Loader=_make_loader("-o " + key)) if value.strip() != "" else None
        except yaml.YAMLError:
            parsed = value
        node = result
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        node[parts[-1]] = parsed
    return result


def merge_config(cfg, overrides, source="-o (command line)"):
    """Merge a dict (or list of ``k=v`` strings) into ``cfg``, recording ``source``."""
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(overrides)
    overrides = _to_attr(overrides)
    if isinstance(cfg, Config):
        _record_sources(overrides, source, cfg.sources)
    _merge(cfg, overrides)
    return cfg


def validate_top_level(cfg):
    """Reject top-level keys that look like misspellings of a module or setting."""
    known = set(_GLOBAL_KEYS) | set(registry.get_registered())
    for key in list(cfg.keys()):
        if key in known:
            continue
        hint = closest(key, known, cutoff=0.8)
        if hint:
            raise ConfigError(
                "{}: unknown top-level key {!r}; did you mean {}?".format(
                    cfg.source_of(key), key, " / ".join(repr(h) for h in hint)
                )
            )
        logger.warning("%s: top-level key %r is not used by any module (ignored)", cfg.source_of(key), key)


# --------------------------------------------------------------------------------------------
# Type checking of constructor arguments
# --------------------------------------------------------------------------------------------


def _type_name(tp):
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        names = " or ".join(_type_name(a) for a in args)
        return names + (" or None" if len(args) < len(typing.get_args(tp)) else "")
    if origin in (list, tuple):
        return "list"
    if origin is dict:
        return "dict"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


def _check_type(value, tp):
    if tp is inspect_empty or tp is typing.Any:
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        return any(_check_type(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(tp)
        if args and origin is not tuple and len(args) == 1:
            return all(_check_type(v, args[0]) for v in value)
        return True
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True




def _param_type(p):
    """Expected type of a constructor parameter: its annotation, else its default's type."""
    if p.annotation is not inspect_empty and not isinstance(p.annotation, str):
        return p.annotation
    d = p.default
    if d is inspect_empty or d is None:
        return inspect_empty
    if isinstance(d, bool):
        return bool
    if isinstance(d, float):
        return float
    if isinstance(d, int):
        return int
    if isinstance(d, str):
        return inspect_empty  # strings may name classes or modes; not worth guessing
    if isinstance(d, (list, tuple)):
        return list
    if isinstance(d, dict):
        return dict
    return inspect_empty


def _check_kwargs(cls, kwargs, cfg, path, skip=()):
    params = constructor_params(cls)
    for k, v in kwargs.items():
        if k in skip:
            continue
        p = params.get(k)
        if p is None:
            continue
        tp = _param_type(p)
        if v is None and p.default is None:
            continue
        if not _check_type(v, tp):
            raise ConfigError(
                "{}: {}.{}: expected {}, got {} {!r}".format(
                    cfg.source_of(*path, k) if cfg is not None else "<config>",
                    ".".join(path),
                    k,
                    _type_name(tp),
                    type(v).__name__,
                    v,
                )
            )


def _check_keys(cls, keys, cfg, path):
    params = constructor_params(cls)
    for k in keys:
        if k not in params:
            hint = closest(k, params)
            raise ConfigError(
                "{}: {!r} is not a parameter of {} (in {}){}; valid keys: {}".format(
                    cfg.source_of(*path, k) if cfg is not None else "<config>",
                    k,
                    cls.__name__,
                    ".".join(path),
                    "; did you mean {}?".format(" / ".join(repr(h) for h in hint)) if hint else "",
                    ", ".join(sorted(params)),
                )
            )


def build_nested(cls, spec, path=(), cfg=None):
    """Build ``cls(**spec)`` for a plain-dict sub-config, with key and type checks.

    Another registered class can replace ``cls``: a ``!OtherClass {...}`` tag builds that class, and an
    already built object is used as is.
    """
    if spec is None:
        spec = {}
    if isinstance(spec, TaggedDict):
        return create(spec, cfg, where=".".join(path))
    if not isinstance(spec, dict) and not isinstance(spec, (str, int, float, bool, list, tuple)):
        return spec
    if isinstance(spec, dict) and spec.get("name") not in (None, cls.__name__):
        return build_component(spec, where=".".join(path), cfg=cfg)
    if not isinstance(spec, dict):
        raise ConfigError(
            "{}: {} must be a mapping of {} arguments, got {!r}".format(
                cfg.source_of(*path) if cfg is not None else "<config>", ".".join(path), cls.__name__, spec
            )
        )
    spec = {k: v for k, v in spec.items() if k != "name"}
    _check_keys(cls, spec, cfg, path)
    _check_kwargs(cls, spec, cfg, path)
    return cls(**spec)


# --------------------------------------------------------------------------------------------
# create()
# --------------------------------------------------------------------------------------------


def current_config():
    return _BUILDING[-1] if _BUILDING else global_config()


def create(cls_or_name, cfg=None, section=None, where="", **kwargs):
    """Build a registered module from the config (PaddleDetection's ``create``).

    ``cls_or_name``: a class, a class name, or a ``TaggedDict`` (``!Class {...}``).
    ``section``: extra arguments merged over the class's top-level section.
    ``kwargs``: passed to ``from_config`` (e.g. ``input_shape`` from the parent module).
    """
    cfg = cfg if cfg is not None else current_config()
    if isinstance(cls_or_name, TaggedDict):
        section = dict(cls_or_name)
        cls_or_name = cls_or_name.tag
    if isinstance(cls_or_name, str):
        cls = lookup(cls_or_name, where)
    else:
        cls = cls_or_name
    name = cls.__name__
    path = (name,)
    sect = cfg.get(name, None)
    if sect is None:
        sect = {}
    if not isinstance(sect, dict):
        raise ConfigError("{}: section {!r} must be a mapping of arguments".format(cfg.source_of(name), name))
    sect = dict(sect)
    if section:
        sect.update({k: v for k, v in section.items() if k != "name"})
    _check_keys(cls, sect, cfg, path)

    params = constructor_params(cls)
    cls_kwargs = dict(sect)
    for key in getattr(cls, "__shared__", []):
        if key not in cls_kwargs and key in cfg and key in params:
            cls_kwargs[key] = cfg[key]
    _check_kwargs(cls, cls_kwargs, cfg, path, skip=getattr(cls, "__inject__", []))

    _BUILDING.append(cfg)
    try:
        derived = {}
        if hasattr(cls, "from_config"):
            derived = cls.from_config(cls_kwargs, **kwargs) or {}
        cls_kwargs.update(derived)

        for key in getattr(cls, "__inject__", []):
            if key in derived:
                continue
            value = cls_kwargs.get(key, params[key].default if key in params else None)
            if value is inspect_empty:
                value = None
            where_k = "{}.{} in {}".format(name, key, cfg.source_of(name, key))
            if value is None:
                cls_kwargs[key] = None
            elif isinstance(value, str):
                cls_kwargs[key] = create(value, cfg, where=where_k)
            elif isinstance(value, TaggedDict):
                cls_kwargs[key] = create(value, cfg, where=where_k)
            elif isinstance(value, dict):
                if "name" not in value:
                    raise ConfigError(
                        "{}: {}.{} is a mapping without 'name:' naming the class to build".format(
                            cfg.source_of(name, key), name, key
                        )
                    )
                cls_kwargs[key] = create(value["name"], cfg, section=value, where=where_k)
            else:
                cls_kwargs[key] = value

        for key, sub in getattr(cls, "__nested__", {}).items():
            value = cls_kwargs.get(key)
            if key not in derived and isinstance(value, dict) and not isinstance(value, TaggedDict) \
                    and value.get("name") in (None, sub):
                subcls = lookup(sub)
                _check_keys(subcls, cls_kwargs[key], cfg, path + (key,))
                _check_kwargs(subcls, cls_kwargs[key], cfg, path + (key,))
        return cls(**cls_kwargs)
    finally:
        _BUILDING.pop()


def build_component(spec, where="", cfg=None):
    """A module given as a built object or as a config spec, so constructors accept both.

    ``spec`` may be an already built object (returned as is: keyword construction without the config
    system), a registered class name, a ``!ClassName {...}`` tag or a mapping with ``name:``.
    """
    if isinstance(spec, TaggedDict):
        return create(spec, cfg, where=where)
    if isinstance(spec, str):
        return create(spec, cfg, where=where)
    if isinstance(spec, dict):
        if "name" not in spec:
            raise ConfigError("{}: a mapping without 'name:' naming the class to build: {!r}".format(where or "config", dict(spec)))
        return create(spec["name"], cfg, section=spec, where=where)
    return spec
