"""Download weight files into a local cache, safely.

Weights are large (100+ MB) and training is often started on several GPUs of one machine at
once, so the download must survive flaky connections (resume with HTTP ``Range``), never
leave a half-written file under the final name (``.part`` file + ``os.replace``), verify
checksums before publishing the file, and let only one process download while the others
wait (a lock file).  Offline machines get an error that says where to put the file by hand.

This module deliberately does not import paddle so it can be used without it.
"""
import contextlib
import hashlib
import http.client
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

from ..version import __version__

__all__ = [
    "ChecksumError",
    "DownloadError",
    "HOME_ENV_VAR",
    "cache_path_for_url",
    "download",
    "file_digest",
    "filename_from_url",
    "weights_cache_dir",
]

logger = logging.getLogger(__name__)

HOME_ENV_VAR = "PPDET_HTC_HOME"
DEFAULT_HOME = os.path.join("~", ".cache", "ppdet_htc")
CHUNK_SIZE = 1 << 16
PART_SUFFIX = ".part"
LOCK_SUFFIX = ".lock"
# Seconds to wait before retry k (k = 1, 2, ...) is RETRY_BACKOFF * 2 ** (k - 1), capped.
RETRY_BACKOFF = 1.0
MAX_BACKOFF = 10.0
# HTTP client errors worth retrying; any other 4xx is permanent (wrong URL, forbidden, ...).
RETRYABLE_4XX = (408, 425, 429)

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
    import msvcrt


class DownloadError(OSError):
    """A file could not be fetched; the message says where to place it by hand."""

    def __init__(self, url, reason, path):
        self.url = url
        self.reason = reason
        self.path = path
        super().__init__(
            f"Could not download {url}: {reason}. If this machine has no internet access, "
            f"download the file on another machine and place it by hand at {path}"
        )

    def __reduce__(self):
        return (type(self), (self.url, self.reason, self.path))


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the published digest (corrupt or changed file)."""

    def __init__(self, url, algorithm, expected, actual, path):
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        OSError.__init__(
            self,
            f"Checksum mismatch for {url}: expected {algorithm} {expected}, got {actual}. "
            f"The partial download was deleted; retry, or check that the URL and the "
            f"expected digest belong together. A verified copy can be placed by hand at {path}",
        )
        self.url = url
        self.reason = "checksum mismatch"
        self.path = path

    def __reduce__(self):
        return (type(self), (self.url, self.algorithm, self.expected, self.actual, self.path))


class _TransientError(Exception):
    """Internal: one transfer attempt failed in a way a retry (with resume) may fix."""


class _PermanentError(Exception):
    """Internal: retrying cannot help (e.g. HTTP 404)."""


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def weights_cache_dir():
    """Return the cache dir: ``$PPDET_HTC_HOME/weights``, else ``~/.cache/ppdet_htc/weights``."""
    home = os.environ.get(HOME_ENV_VAR) or DEFAULT_HOME
    return os.path.abspath(os.path.join(os.path.expanduser(home), "weights"))


def filename_from_url(url):
    """Return the file name a URL is cached under (last path component, query ignored)."""
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not name or name in (".", ".."):
        raise ValueError(f"Cannot derive a file name from URL {url!r}; it must end with one.")
    return name


def cache_path_for_url(url, dest_dir=None):
    """Return the final local path ``download(url, dest_dir)`` would produce."""
    directory = dest_dir if dest_dir is not None else weights_cache_dir()
    return os.path.join(os.path.abspath(os.path.expanduser(directory)), filename_from_url(url))


def _check_scheme(url):
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"Only http:// and https:// URLs can be downloaded, got {url!r}")


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def file_digest(path, algorithm="sha256"):
    """Return the hex digest of a file, read in chunks so large weights need little memory."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def _expected_digests(sha256, md5):
    """Return ``[(algorithm, lowercase hex), ...]`` for the digests the caller gave."""
    pairs = [("sha256", sha256), ("md5", md5)]
    return [(algo, value.strip().lower()) for algo, value in pairs if value]


def _first_mismatch(path, expected):
    """Return ``(algorithm, expected, actual)`` for the first wrong digest, or None if all match."""
    for algorithm, want in expected:
        got = file_digest(path, algorithm)
        if got != want:
            return algorithm, want, got
    return None


def _is_valid_final(path, expected):
    """True if ``path`` exists and matches every expected digest (none given → existence)."""
    if not os.path.isfile(path):
        return False
    mismatch = _first_mismatch(path, expected)
    if mismatch is None:
        return True
    logger.warning(
        "%s exists but its %s is %s, expected %s; downloading it again.",
        path, mismatch[0], mismatch[2], mismatch[1],
    )
    return False


# --------------------------------------------------------------------------------------------
# Inter-process lock
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(lock_path):
    """Hold an exclusive lock on ``lock_path`` so only one process downloads a given file.

    The lock file is left in place: removing it would race with a process that has just opened
    it. The OS drops the lock when the holder exits, even if it crashes.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            logger.info("Waiting for another process to finish downloading (lock %s)", lock_path)
            _lock_blocking(fd)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


def _try_lock(fd):
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


def _lock_blocking(fd):
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    while not _try_lock(fd):  # pragma: no cover - Windows
        time.sleep(0.2)


def _unlock(fd):
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:  # pragma: no cover - Windows
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


# --------------------------------------------------------------------------------------------
# One HTTP transfer into the .part file
# --------------------------------------------------------------------------------------------


def _open(url, offset, timeout):
    """Send a GET (with ``Range`` when resuming) and return the response object."""
    headers = {"User-Agent": f"ppdet_htc/{__version__}", "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)


def _parse_content_range(value):
    """Parse ``bytes a-b/total`` or ``bytes */total`` into ``(start or None, total or None)``."""
    match = re.match(r"\s*bytes\s+(\*|(\d+)-\d+)/(\*|\d+)", value or "")
    if not match:
        return None, None
    start = int(match.group(2)) if match.group(2) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _content_length(response):
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _copy_body(response, part_path, mode, offset, total, name, progress):
    """Stream the response body into the part file, updating a progress bar."""
    from .progress import progress as progress_reporter  # a bar on a terminal, timed lines otherwise

    with open(part_path, mode) as out, progress_reporter(
        total=total, desc=name, unit="B", enabled=bool(progress), initial=offset, unit_scale=True
    ) as bar:
        for chunk in iter(lambda: response.read(CHUNK_SIZE), b""):
            out.write(chunk)
            bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())


def _plan_write(response, offset):
    """Decide how to write a response: return ``(mode, offset, expected_total)`` or None.

    A 206 from ``offset`` continues the part file; a 200 (the server ignored ``Range``) rewrites
    it from byte 0; None means the body is unusable (a 206 starting elsewhere).
    """
    length = _content_length(response)
    if response.status == 206:
        start, total = _parse_content_range(response.headers.get("Content-Range"))
        if start != offset:
            logger.warning("Server resumed at byte %s instead of %s; restarting.", start, offset)
            return None
        if total is None and length is not None:
            total = offset + length
        return "ab", offset, total
    if offset > 0:
        logger.info("Server ignored the Range request (HTTP %s); restarting.", response.status)
    return "wb", 0, length


def _transfer_once(url, part_path, timeout, progress):
    """Make one request that continues ``part_path`` and check the body arrived in full."""
    offset = os.path.getsize(part_path) if os.path.exists(part_path) else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset > 0:
            return _handle_416(err, url, part_path, offset, timeout, progress)
        raise
    with response:
        plan = _plan_write(response, offset)
        if plan is not None:
            mode, start, total = plan
            label = os.path.basename(part_path)[: -len(PART_SUFFIX)]
            _copy_body(response, part_path, mode, start, total, label, progress)
    if plan is None:
        _restart(url, part_path, timeout, progress)
        return
    size = os.path.getsize(part_path)
    if total is not None and size < total:
        raise _TransientError(f"connection closed after {size} of {total} bytes")


def _handle_416(err, url, part_path, offset, timeout, progress):
    """``Range Not Satisfiable``: the part is already complete, or stale and must restart."""
    _, total = _parse_content_range(err.headers.get("Content-Range") if err.headers else None)
    err.close()
    if total is not None and total == offset:
        return
    logger.info("Server rejected resume at byte %s (total %s); restarting.", offset, total)
    _restart(url, part_path, timeout, progress)


def _restart(url, part_path, timeout, progress):
    """Drop the part file and fetch from byte 0 (no ``Range``, so this cannot recurse again)."""
    os.remove(part_path)
    _transfer_once(url, part_path, timeout, progress)


def _classify(err):
    """Map a low-level exception to a retry decision and a short, human-readable reason."""
    if isinstance(err, urllib.error.HTTPError):
        reason = f"HTTP {err.code} {err.reason}"
        err.close()
        if 400 <= err.code < 500 and err.code not in RETRYABLE_4XX:
            return _PermanentError(reason)
        return _TransientError(reason)
    if isinstance(err, urllib.error.URLError):
        return _TransientError(f"cannot reach server ({err.reason})")
    if isinstance(err, (socket.timeout, TimeoutError)):
        return _TransientError("timed out")
    if isinstance(err, http.client.HTTPException):
        return _TransientError(f"broken HTTP response ({type(err).__name__}: {err})")
    return _TransientError(f"{type(err).__name__}: {err}")


def _fetch_with_retries(url, part_path, final_path, retries, timeout, progress):
    """Run transfer attempts, resuming the part file, until one completes or retries run out."""
    attempts = max(0, int(retries)) + 1
    for attempt in range(1, attempts + 1):
        try:
            _transfer_once(url, part_path, timeout, progress)
            return
        except _TransientError as err:
            failure = err
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            failure = _classify(err)
        if isinstance(failure, _PermanentError):
            raise DownloadError(url, str(failure), final_path)
        if attempt < attempts:
            delay = min(MAX_BACKOFF, RETRY_BACKOFF * 2 ** (attempt - 1))
            logger.warning(
                "Download of %s failed (%s); retry %d/%d in %.1fs.",
                url, failure, attempt, attempts - 1, delay,
            )
            time.sleep(delay)
    raise DownloadError(url, f"{failure} (after {attempts} attempt(s))", final_path)


def _verify_and_publish(url, part_path, final_path, expected):
    """Check digests of the finished part file, then atomically rename it to the final name."""
    mismatch = _first_mismatch(part_path, expected)
    if mismatch is not None:
        os.remove(part_path)
        raise ChecksumError(url, *mismatch, final_path)
    os.replace(part_path, final_path)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def download(url, dest_dir=None, sha256=None, md5=None, progress=True, retries=3, timeout=30):
    """Return the local path of ``url``'s file, downloading it into the cache if needed.

    Args:
        url: http(s) URL; the file is stored under the URL's last path component.
        dest_dir: directory to store it in; default ``weights_cache_dir()``.
        sha256, md5: expected hex digests; when given, a cached file must match them and a fresh
            download is verified before it gets its final name.
        progress: report progress (a bar on a terminal, a line every few seconds otherwise).
        retries: how many times a failed transfer is retried, resuming where it stopped.
        timeout: socket timeout in seconds for connecting and for each read.

    Raises:
        ValueError: the URL is not http(s) or has no file name.
        DownloadError: network failure, HTTP error, or transfer still incomplete after retries.
        ChecksumError: the downloaded bytes do not match ``sha256``/``md5``.
    """
    _check_scheme(url)
    final_path = cache_path_for_url(url, dest_dir)
    expected = _expected_digests(sha256, md5)
    if _is_valid_final(final_path, expected):
        return final_path
    os.makedirs(os.path.dirname(final_path), exist_ok=True)
    with _file_lock(final_path + LOCK_SUFFIX):
        # Another process may have finished the download while we waited for the lock.
        if os.path.isfile(final_path) and _first_mismatch(final_path, expected) is None:
            return final_path
        part_path = final_path + PART_SUFFIX
        logger.info("Downloading %s to %s", url, final_path)
        _fetch_with_retries(url, part_path, final_path, retries, timeout, progress)
        _verify_and_publish(url, part_path, final_path, expected)
    return final_path
