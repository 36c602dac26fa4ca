"""Config system: registry of modules and YAML loading (PaddleDetection conventions)."""
from .config import (  # noqa: F401
    AttrDict,
    Config,
    ConfigError,
    TaggedDict,
    build_nested,
    create,
    declare_global_keys,
    global_config,
    load_config,
    merge_config,
    parse_overrides,
)
from .registry import register, serializable  # noqa: F401
