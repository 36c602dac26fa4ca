"""Named weights (model zoo) and resolution of a weights spec to a local file.

Configs and the command line say ``weights: <spec>`` where the spec may be a local file, an
http(s) URL or a model-zoo name; ``resolve_weights`` turns any of these into a local path so the
loader never has to care where the file came from. The names live in ``model_zoo.yml`` next to
this module. Weights are not loaded here.

Entries with ``format: mmdet_pth`` name mmdetection's published checkpoints: resolving one downloads
the ``.pth`` (its sha256 must start with the 8 hex digits in its file name, mmdetection's convention),
converts it once for the entry's config (under a lock, written atomically) and returns the cached
``.pdparams`` next to it. Conversion needs Paddle; everything else here does not.
"""
import copy
import difflib
import logging
import os
import re
import urllib.parse

import yaml

from .download import DownloadError, _file_lock, cache_path_for_url, download

__all__ = [
    "DEFAULT_MANIFEST",
    "REPO_ROOT",
    "UnknownModelError",
    "converted_path",
    "get_entry",
    "list_models",
    "load_manifest",
    "model_names",
    "resolve_weights",
]

logger = logging.getLogger(__name__)

DEFAULT_MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_zoo.yml")
# Bundled ``path`` entries are relative to the repository root (the parent of ``ppdet_htc``).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEIGHTS_SUFFIX = ".pdparams"
REQUIRED_FIELDS = ("name", "sha256", "config", "metrics", "description")
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
# Source formats of an entry's file: a Paddle checkpoint, or an mmdetection .pth converted on first use.
FORMATS = ("pdparams", "mmdet_pth")
# mmdetection names its files <config>_<date>-<first 8 hex digits of the file's sha256>.pth
_MMDET_FILE_RE = re.compile(r"-([0-9a-f]{8})\.pth$")


class UnknownModelError(KeyError):
    """A model-zoo name that is not in the manifest (message lists the closest names)."""

    def __str__(self):
        # KeyError would show the message repr()-quoted; keep it readable.
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


def load_manifest(manifest=None):
    """Return the validated list of entries.

    ``manifest`` is None (the packaged ``model_zoo.yml``), a path to another YAML file, or the
    already-parsed content (a list of entries or ``{"models": [...]}``) — the latter two let
    tests and users point names at other servers without editing the package.
    """
    source = "<in-memory manifest>"
    if manifest is None or isinstance(manifest, (str, os.PathLike)):
        source = os.fspath(manifest) if manifest is not None else DEFAULT_MANIFEST
        with open(source, encoding="utf-8") as f:
            manifest = yaml.safe_load(f)
    entries = manifest.get("models") if isinstance(manifest, dict) else manifest
    if not isinstance(entries, list):
        raise ValueError(f"{source}: expected a list of entries under 'models'")
    entries = copy.deepcopy(entries)
    _validate_entries(entries, source)
    return entries


def _validate_entries(entries, source):
    """Raise ValueError naming the manifest and entry when a field is missing or malformed."""
    seen = set()
    for index, entry in enumerate(entries):
        label = entry.get("name", "?") if isinstance(entry, dict) else repr(entry)
        where = f"{source}: entry {index} ({label})"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a mapping")
        missing = [key for key in REQUIRED_FIELDS if key not in entry]
        if missing:
            raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
        _validate_entry(entry, where)
        if entry["name"] in seen:
            raise ValueError(f"{where}: duplicate name")
        seen.add(entry["name"])


def _validate_entry(entry, where):
    if not isinstance(entry["name"], str) or not entry["name"]:
        raise ValueError(f"{where}: 'name' must be a non-empty string")
    if ("url" in entry) == ("path" in entry):
        raise ValueError(f"{where}: needs exactly one of 'url' (download) or 'path' (bundled)")
    if "url" in entry and not _is_http_url(entry["url"]):
        raise ValueError(f"{where}: 'url' must be an http(s) URL, got {entry['url']!r}")
    if "path" in entry and not (isinstance(entry["path"], str) and entry["path"]):
        raise ValueError(f"{where}: 'path' must be a non-empty string")
    sha256 = entry["sha256"]
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256_RE.match(sha256)):
        raise ValueError(f"{where}: 'sha256' must be 64 hex digits or null")
    if entry["config"] is not None and not isinstance(entry["config"], str):
        raise ValueError(f"{where}: 'config' must be a path string or null")
    if entry["metrics"] is not None and not isinstance(entry["metrics"], dict):
        raise ValueError(f"{where}: 'metrics' must be a mapping or null")
    fmt = entry.get("format", "pdparams")
    if fmt not in FORMATS:
        raise ValueError(f"{where}: 'format' must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "mmdet_pth":
        if "url" not in entry or not _MMDET_FILE_RE.search(urllib.parse.urlparse(entry["url"]).path):
            raise ValueError(f"{where}: an mmdet_pth entry needs a 'url' whose file name ends with "
                             f"-<8 hex digits of its sha256>.pth (mmdetection's convention)")
        if not entry["config"]:
            raise ValueError(f"{where}: an mmdet_pth entry needs the 'config' its weights are converted for")


# --------------------------------------------------------------------------------------------
# Look-ups
# --------------------------------------------------------------------------------------------


def list_models(manifest=None):
    """Return all model-zoo entries (copies; editing them does not change the manifest)."""
    return load_manifest(manifest)


def model_names(manifest=None):
    """Return the model-zoo names in manifest order."""
    return [entry["name"] for entry in load_manifest(manifest)]


def get_entry(name, manifest=None):
    """Return the entry called ``name``; unknown names raise UnknownModelError (a KeyError)."""
    entries = load_manifest(manifest)
    for entry in entries:
        if entry["name"] == name:
            return entry
    names = [entry["name"] for entry in entries]
    raise UnknownModelError(f"Unknown model-zoo name {name!r}. {_suggestion(name, names)}")


def _suggestion(name, names):
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
    if close:
        return f"Did you mean: {', '.join(close)}? Known names: {', '.join(names)}"
    return f"Known names: {', '.join(names)}"


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


def resolve_weights(spec, dest_dir=None, progress=True, manifest=None):
    """Turn a weights spec into a local file path, downloading if needed.

    ``spec`` is tried as, in order: an existing local file (also ``spec + '.pdparams'``, as
    PaddleDetection writes ``weights: output/x/model_final``), an http(s) URL, a model-zoo name.
    ``dest_dir`` overrides the download cache directory.
    """
    spec = os.fspath(spec)
    local = _existing_local_file(spec)
    if local is not None:
        return local
    if _is_http_url(spec):
        return download(spec, dest_dir=dest_dir, progress=progress)
    entries = load_manifest(manifest)
    by_name = {entry["name"]: entry for entry in entries}
    if spec in by_name:
        return _resolve_entry(by_name[spec], dest_dir, progress)
    raise FileNotFoundError(_not_found_message(spec, list(by_name)))


def _existing_local_file(spec):
    """Return the path of an existing weights file for ``spec``, or None."""
    for candidate in (spec, spec + WEIGHTS_SUFFIX):
        if os.path.isfile(os.path.expanduser(candidate)):
            return os.path.expanduser(candidate)
    return None


def _is_http_url(spec):
    return isinstance(spec, str) and urllib.parse.urlparse(spec).scheme.lower() in ("http", "https")


def _resolve_entry(entry, dest_dir, progress):
    if entry.get("format") == "mmdet_pth":
        return _resolve_mmdet(entry, dest_dir, progress)
    if "url" in entry:
        return download(entry["url"], dest_dir=dest_dir, sha256=entry["sha256"], progress=progress)
    return _bundled_path(entry)


def converted_path(entry, dest_dir=None):
    """Where the converted ``.pdparams`` of an ``mmdet_pth`` entry is cached (next to its ``.pth``)."""
    return os.path.splitext(cache_path_for_url(entry["url"], dest_dir))[0] + WEIGHTS_SUFFIX


def _resolve_mmdet(entry, dest_dir, progress):
    """Download (or find) mmdetection's .pth, check its sha256 prefix, convert it once, return the .pdparams."""
    out = converted_path(entry, dest_dir)
    if os.path.isfile(out):
        return out
    config = os.path.join(REPO_ROOT, entry["config"])
    if not os.path.isfile(config):
        raise FileNotFoundError(
            f"Model-zoo entry {entry['name']!r}: its config {config} is missing; it is needed to convert the "
            f"mmdetection weights (or place an already converted file at {out})")
    prefix = _MMDET_FILE_RE.search(urllib.parse.urlparse(entry["url"]).path).group(1)
    try:
        pth = download(entry["url"], dest_dir=dest_dir, sha256=entry["sha256"], sha256_prefix=prefix,
                       progress=progress)
    except DownloadError as err:
        if type(err) is not DownloadError:  # a checksum mismatch says what it needs to
            raise
        raise DownloadError(err.url, err.reason, err.path,
                            alternative=f"or a file converted by `ppdet-htc-convert-mmdet --src <the .pth> --config "
                                        f"{entry['config']} --out {out}` at {out}") from None
    with _file_lock(out + ".lock"):
        if not os.path.isfile(out):  # another process may have converted it while we waited
            from ..engine.convert_mmdet import convert_mmdet_checkpoint

            logger.info("Converting mmdetection checkpoint %s for %s", pth, config)
            convert_mmdet_checkpoint(pth, config, out)
    return out


def _bundled_path(entry):
    """Return the bundled file of an entry, or explain that it is missing and how to make it."""
    path = os.path.join(REPO_ROOT, entry["path"])
    if os.path.isfile(path):
        return path
    how = entry.get("create") or "It is not part of this checkout; restore it from the repository."
    raise FileNotFoundError(
        f"Bundled weights {entry['name']!r} are missing: expected the file {path}. {how}"
    )


def _not_found_message(spec, names):
    message = (
        f"Weights {spec!r} not found: it is not an existing file (also tried "
        f"{spec + WEIGHTS_SUFFIX!r}), not an http(s) URL, and not a model-zoo name. "
    )
    return message + _suggestion(spec, names)
