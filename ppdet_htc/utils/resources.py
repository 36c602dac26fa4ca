"""Files that ship with ppdet_htc (configs, the demo checkpoint) found the same way in a checkout and a wheel.

In a source checkout they live at the repository root (``configs/``, ``weights/``); ``setup.py`` maps those
folders into the wheel as ``ppdet_htc/configs`` and ``ppdet_htc/weights`` (no second copy is committed).
Every lookup tries the installed location first, then the checkout, and reports every place it looked.
"""
import os

__all__ = ["PACKAGE_DIR", "REPO_ROOT", "config_dirs", "find_config", "find_bundled_file", "in_checkout",
           "user_home", "HOME_ENV_VAR"]

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(PACKAGE_DIR)
HOME_ENV_VAR = "PPDET_HTC_HOME"  # the same variable the download cache uses


def in_checkout():
    """True when the package runs from a source checkout (editable install or ``scripts/*.py``)."""
    return os.path.isfile(os.path.join(REPO_ROOT, "setup.py")) and os.path.isdir(os.path.join(REPO_ROOT, "configs"))


def user_home():
    """``$PPDET_HTC_HOME`` or ``~/.cache/ppdet_htc``: where an installed package keeps generated data."""
    return os.path.abspath(os.path.expanduser(os.environ.get(HOME_ENV_VAR) or os.path.join("~", ".cache",
                                                                                         "ppdet_htc")))


def _existing_dirs(*dirs):
    return [d for d in dirs if os.path.isdir(d)]


def config_dirs():
    """The packaged config folders, installed copy first (``ppdet_htc/configs``), then ``<checkout>/configs``."""
    return _existing_dirs(os.path.join(PACKAGE_DIR, "configs"), os.path.join(REPO_ROOT, "configs"))


def _strip_prefix(name, prefix):
    parts = os.path.normpath(name).split(os.sep)
    return os.path.join(*parts[1:]) if len(parts) > 1 and parts[0] == prefix else None


def find_config(name, relative_to=None):
    """Resolve a config reference; returns ``(path or None, [every path tried])``.

    ``name`` is tried relative to ``relative_to`` (the including file's folder, or the working directory
    for ``-c``), then inside the packaged config folder, where a leading ``configs/`` is optional: both
    ``configs/htc/htc_r50_fpn_1x_coco.yml`` and ``htc/htc_r50_fpn_1x_coco.yml`` name the same file.
    """
    name = os.path.expanduser(os.fspath(name))
    tried = []
    first = name if os.path.isabs(name) else os.path.join(relative_to or os.getcwd(), name)
    tried.append(os.path.abspath(first))
    if not os.path.isabs(name):
        inner = _strip_prefix(name, "configs")
        for root in config_dirs():
            for candidate in ([name] + ([inner] if inner else [])):
                tried.append(os.path.abspath(os.path.join(root, candidate)))
    tried = list(dict.fromkeys(tried))
    for path in tried:
        if os.path.isfile(path):
            return path, tried
    return None, tried


def find_bundled_file(path):
    """A file the repository bundles (``weights/htc_r18_demo_shapes.pdparams``), in a checkout or a wheel.

    Returns ``(path or None, [every path tried])``; a leading ``weights/`` or ``configs/`` maps to the
    package's folder of the same name.
    """
    path = os.fspath(path)
    tried = [os.path.join(REPO_ROOT, path)]
    parts = os.path.normpath(path).split(os.sep)
    if len(parts) > 1 and parts[0] in ("weights", "configs"):
        tried.insert(0, os.path.join(PACKAGE_DIR, *parts))
    for candidate in tried:
        if os.path.isfile(candidate):
            return candidate, tried
    return None, tried
