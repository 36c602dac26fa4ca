"""Atomic file writing: a crash or an exception never leaves a half-written result or checkpoint.

Every writer goes to a temporary file in the destination's directory (same file system, so the
final ``os.replace`` is atomic), flushes and fsyncs it, then renames it over the destination.
On any exception the temporary file is removed and an existing destination is left untouched.
"""
import contextlib
import json
import os
import tempfile

import numpy as np

__all__ = ["atomic_write", "write_json_atomic", "atomic_save_bytes"]

_MODES = ("w", "wt", "wb")


def _default_file_mode():
    """Permission bits a plain ``open(path, 'w')`` would use (0o666 minus the umask).

    ``mkstemp`` creates files with 0o600; without this fix-up results written atomically would be
    unreadable for other users, unlike files written the ordinary way.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)  # no read-only query exists elsewhere; restore immediately
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory):
    """Persist the rename itself; some platforms cannot open directories, which is harmless."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode="w", encoding="utf-8"):
    """Open a temporary file for writing; it replaces ``path`` only if the block exits normally.

    ``mode`` is ``'w'``/``'wt'`` (text, ``encoding`` applies) or ``'wb'`` (binary). Missing parent
    directories are created. If the block raises, the temporary file is deleted and any existing
    file at ``path`` keeps its old content.
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write: mode must be one of {_MODES}, got {mode!r} for {path}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        if "b" in mode:
            f = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding=encoding)
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            mode_bits = os.stat(path).st_mode & 0o7777
        else:
            mode_bits = _default_file_mode()
        os.chmod(tmp_path, mode_bits)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise
    _fsync_directory(directory)


def _json_default(obj):
    """Let numpy scalars/arrays through ``json.dump``; anything else is a caller bug worth naming."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, bytes):
        return obj.decode("utf-8")
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable: {obj!r}")


def write_json_atomic(path, obj, **json_kwargs):
    """Dump ``obj`` as JSON to ``path`` atomically; numpy scalars and arrays are converted."""
    json_kwargs.setdefault("default", _json_default)
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, **json_kwargs)


def atomic_save_bytes(path, data):
    """Write a bytes-like object (an encoded image, a serialised checkpoint) to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(memoryview(data))
