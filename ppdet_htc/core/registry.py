"""Module registry: classes are registered by name so YAML configs can refer to them.

This mirrors PaddleDetection's workspace conventions, which our users' configs rely on:

* ``@register`` makes a class buildable with ``create('ClassName')``; its YAML section
  (a top-level key named after the class) provides constructor keyword arguments.
* ``__shared__ = [...]``: keys that fall back to the top-level config value of the same
  name (e.g. ``num_classes``) when the class section does not set them.
* ``__inject__ = [...]``: keys whose value names another registered class (or a dict with
  ``name:``) that is built and passed in as an object.
* ``__nested__ = {key: 'ClassName'}``: keys whose value is a plain dict of that class's
  constructor arguments (PaddleDetection's ``anchor_generator:`` style); the keys are checked.
* ``@serializable`` additionally allows the YAML tag ``!ClassName {...}``.
"""
import difflib
import inspect

from ..errors import UnknownModuleError

__all__ = [
    "register",
    "serializable",
    "get_registered",
    "lookup",
    "is_registered",
    "is_serializable",
    "closest",
    "constructor_params",
]

_REGISTRY = {}
_SERIALIZABLE = set()


def register(cls):
    """Class decorator: make ``cls`` buildable by name from the config."""
    name = cls.__name__
    prev = _REGISTRY.get(name)
    if prev is not None and prev is not cls and (
        prev.__module__ != cls.__module__ or prev.__qualname__ != cls.__qualname__
    ):
        raise ValueError(
            "class name {!r} is registered twice ({}.{} and {}.{}); config names must be unique".format(
                name, prev.__module__, prev.__qualname__, cls.__module__, cls.__qualname__
            )
        )
    _REGISTRY[name] = cls
    return cls


def serializable(cls):
    """Class decorator: allow ``!ClassName`` tags in YAML (implies ``register``)."""
    register(cls)
    _SERIALIZABLE.add(cls.__name__)
    return cls


def get_registered():
    """Return a copy of ``{name: class}`` for every registered class."""
    _ensure_builtin_modules()
    return dict(_REGISTRY)


def is_registered(name):
    _ensure_builtin_modules()
    return name in _REGISTRY


def is_serializable(name):
    _ensure_builtin_modules()
    return name in _SERIALIZABLE


def closest(word, candidates, n=3, cutoff=0.6):
    """Closest spellings of ``word`` among ``candidates`` (for 'did you mean' messages)."""
    cands = list(candidates)
    hits = difflib.get_close_matches(word, cands, n=n, cutoff=cutoff)
    if not hits:
        low = {c.lower(): c for c in cands}
        hits = [low[h] for h in difflib.get_close_matches(word.lower(), list(low), n=n, cutoff=cutoff)]
    return hits


def lookup(name, where=""):
    """Return the registered class called ``name`` or raise ``UnknownModuleError`` (a ConfigError and a KeyError)."""
    _ensure_builtin_modules()
    if name in _REGISTRY:
        return _REGISTRY[name]
    hint = closest(name, _REGISTRY)
    msg = "unknown module {!r}{}".format(name, " (" + where + ")" if where else "")
    msg += "; did you mean {}?".format(" / ".join(repr(h) for h in hint)) if hint else (
        "; registered modules are: " + ", ".join(sorted(_REGISTRY))
    )
    raise UnknownModuleError(msg)


def constructor_params(cls):
    """``{name: inspect.Parameter}`` of the keyword arguments ``cls(...)`` accepts."""
    sig = inspect.signature(cls.__init__)
    params = {}
    for pname, p in sig.parameters.items():
        if pname == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        params[pname] = p
    return params


_BUILTINS_LOADED = [False]


def _ensure_builtin_modules():
    """Import the package modules that register classes (once, lazily, avoiding cycles)."""
    if _BUILTINS_LOADED[0]:
        return
    _BUILTINS_LOADED[0] = True
    import importlib

    for mod in ("ppdet_htc.modeling", "ppdet_htc.data", "ppdet_htc.engine.optimizer"):
        importlib.import_module(mod)
