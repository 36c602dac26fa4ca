"""Download weight files into a local cache, safely.

Weights are large (100+ MB) and training is often started on several GPUs of one machine at
once, so the download must survive flaky connections (resume with HTTP ``Range``), never
leave a half-written file under the final name (``.part`` file + ``os.replace``), verify
checksums before publishing the file, and let only one process download while the others
wait (a lock file).  Offline machines get an error that says where to put the file by hand.

The cache never hands out a wrong or broken file:

* an entry is keyed by the full URL: ``<first 8 hex digits of sha256(url)>_<file name>``, and a
  ``<entry>.url`` file beside it records the URL, so two URLs with the same file name are two
  entries and an entry is never reused for another URL;
* before a download gets its final name, its content must be a complete checkpoint of a known
  kind (``.pdparams`` pickle, PyTorch ``.pth`` zip/legacy, ``.npz``). A transfer without
  ``Content-Length`` that was cut short is resumed, never published; an HTML page served with
  status 200 is refused, naming the URL and what arrived;
* failures that retrying cannot fix fail at once: a host that does not resolve, a connection that
  times out, a server that never answers (read timeout before any response), HTTP 4xx.

Timeouts: connect 10 s and read 20 s by default; ``PPDET_HTC_DOWNLOAD_TIMEOUT`` overrides them
(``"30"`` for both, or ``"5,60"`` for connect, read), as does the ``timeout`` argument.

This module deliberately does not import paddle so it can be used without it.
"""
import contextlib
import errno
import hashlib
import http.client
import logging
import os
import pickle
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

from ..errors import ConfigError
from ..version import __version__

__all__ = [
    "ChecksumError",
    "DownloadError",
    "HOME_ENV_VAR",
    "TIMEOUT_ENV_VAR",
    "download_timeouts",
    "cache_path_for_url",
    "download",
    "file_digest",
    "filename_from_url",
    "weights_cache_dir",
]

logger = logging.getLogger(__name__)

HOME_ENV_VAR = "PPDET_HTC_HOME"
TIMEOUT_ENV_VAR = "PPDET_HTC_DOWNLOAD_TIMEOUT"
DEFAULT_HOME = os.path.join("~", ".cache", "ppdet_htc")
CHUNK_SIZE = 1 << 16
PART_SUFFIX = ".part"
LOCK_SUFFIX = ".lock"
URL_SUFFIX = ".url"
# Seconds to wait for a connection, and for each read (the first answer included).
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 20.0
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
    """A file could not be fetched; the message says where to place it by hand.

    ``alternative``, when given, is appended: another way to get what is needed (e.g. where a converted
    file can be placed instead of the download).
    """

    def __init__(self, url, reason, path, alternative=None):
        self.url = url
        self.reason = reason
        self.path = path
        self.alternative = alternative
        super().__init__(
            f"Could not download {url}: {reason}. If this machine has no internet access, "
            f"download the file on another machine and place it by hand at {path}"
            + (f" ({alternative})" if alternative else "")
        )

    def __reduce__(self):
        return (type(self), (self.url, self.reason, self.path, self.alternative))


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
    """Return the URL's file name (last path component, query ignored)."""
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not name or name in (".", ".."):
        raise ConfigError(f"Cannot derive a file name from URL {url!r}; it must end with one.")
    return name


def url_key(url):
    """First 8 hex digits of the URL's sha256: what makes cache entries of equal file names distinct."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:8]


def cache_path_for_url(url, dest_dir=None):
    """Return the final local path ``download(url, dest_dir)`` would produce: ``<dir>/<url_key>_<name>``."""
    directory = dest_dir if dest_dir is not None else weights_cache_dir()
    name = f"{url_key(url)}_{filename_from_url(url)}"
    return os.path.join(os.path.abspath(os.path.expanduser(directory)), name)


def download_timeouts(timeout=None):
    """Return ``(connect, read)`` seconds: ``timeout`` (a number or a pair), else the environment, else defaults."""
    source = "timeout argument"
    if timeout is None:
        value = os.environ.get(TIMEOUT_ENV_VAR, "").strip()
        if not value:
            return DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
        source = f"{TIMEOUT_ENV_VAR}={value!r}"
        try:
            timeout = [float(v) for v in value.split(",")]
        except ValueError:
            timeout = None
        if timeout is None or len(timeout) not in (1, 2):
            raise ConfigError(f"{source}: expected seconds, e.g. 30, or connect,read seconds, e.g. 5,60")
    pair = list(timeout) if isinstance(timeout, (tuple, list)) else [timeout]
    if len(pair) == 1:
        pair = pair * 2
    if len(pair) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in pair):
        error = ConfigError if source != "timeout argument" else ValueError  # the environment is the user's
        raise error(f"{source}: timeouts must be positive seconds, got {timeout!r}")
    return float(pair[0]), float(pair[1])


def _check_scheme(url):
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"Only http:// and https:// URLs can be downloaded, got {url!r}")


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


def _expected_digests(sha256, md5, sha256_prefix=None):
    """Return ``[(algorithm, lowercase hex), ...]`` for the digests the caller gave.

    ``sha256_prefix``: only the leading hex digits are known (mmdetection puts 8 of them in file names).
    """
    pairs = [("sha256", sha256), ("md5", md5)]
    out = [(algo, value.strip().lower()) for algo, value in pairs if value]
    if sha256_prefix:
        prefix = sha256_prefix.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{4,64}", prefix):
            raise ValueError(f"sha256_prefix must be hex digits, got {sha256_prefix!r}")
        out.append(("sha256", prefix))
    return out


def _first_mismatch(path, expected):
    """Return ``(algorithm, expected, actual)`` for the first wrong digest, or None if all match."""
    digests = {}
    for algorithm, want in expected:
        if algorithm not in digests:
            digests[algorithm] = file_digest(path, algorithm)
        got = digests[algorithm]
        if not got.startswith(want):
            shown = want if len(want) == len(got) else f"{want}... (a prefix)"
            return algorithm, shown, got
    return None


def _check_owner(url, path):
    """Refuse an entry whose recorded URL is another one (``<entry>.url``; absent for files placed by hand)."""
    try:
        with open(path + URL_SUFFIX, encoding="utf-8") as f:
            owner = f.read().strip()
    except FileNotFoundError:
        return
    if owner != url:
        raise DownloadError(url, f"the cache entry {path} belongs to another URL ({owner}); remove it "
                                 f"or use another cache directory ({HOME_ENV_VAR})", path)


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


class _ConnectTimeout(OSError):
    """Internal: no TCP/TLS connection within the connect timeout (urllib wraps it in URLError)."""


def _connection_class(base, read_timeout):
    """An ``http.client`` connection that connects within ``self.timeout``, then reads with ``read_timeout``."""

    class Connection(base):
        def connect(self):
            try:
                super().connect()
            except (socket.timeout, TimeoutError):
                raise _ConnectTimeout(f"no connection within {self.timeout:g} s") from None
            self.sock.settimeout(read_timeout)

    return Connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout):
        super().__init__()
        self._conn = _connection_class(http.client.HTTPConnection, read_timeout)

    def http_open(self, req):
        return self.do_open(self._conn, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout):
        super().__init__()
        self._conn = _connection_class(http.client.HTTPSConnection, read_timeout)

    def https_open(self, req):
        return self.do_open(self._conn, req, context=self._context)


def _open(url, offset, timeouts):
    """Send a GET (with ``Range`` when resuming) and return the response object."""
    headers = {"User-Agent": f"ppdet_htc/{__version__}", "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    connect, read = timeouts
    opener = urllib.request.build_opener(_HTTPHandler(read), _HTTPSHandler(read))
    return opener.open(request, timeout=connect)


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
        # read1: whatever has arrived (up to CHUNK_SIZE), so a stall keeps the bytes received before it
        for chunk in iter(lambda: response.read1(CHUNK_SIZE), b""):
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
    """Make one request that continues ``part_path``; return the total size the server announced (or None)."""
    offset = os.path.getsize(part_path) if os.path.exists(part_path) else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset > 0:
            return _handle_416(err, url, part_path, offset, timeout, progress)
        raise
    except (socket.timeout, TimeoutError):
        host = urllib.parse.urlparse(url).netloc
        raise _PermanentError(f"the server {host} did not answer within {timeout[1]:g} s (read timeout; "
                              f"set {TIMEOUT_ENV_VAR} to wait longer)") from None
    with response:
        plan = _plan_write(response, offset)
        if plan is not None:
            mode, start, total = plan
            label = os.path.basename(part_path)[: -len(PART_SUFFIX)]
            _copy_body(response, part_path, mode, start, total, label, progress)
    if plan is None:
        return _restart(url, part_path, timeout, progress)
    size = os.path.getsize(part_path)
    if total is not None and size < total:
        raise _TransientError(f"connection closed after {size} of {total} bytes")
    if total is not None and size > total:
        raise _PermanentError(f"received {size} bytes, more than the {total} announced")
    return total


def _handle_416(err, url, part_path, offset, timeout, progress):
    """``Range Not Satisfiable``: the part is already complete, or stale and must restart."""
    _, total = _parse_content_range(err.headers.get("Content-Range") if err.headers else None)
    err.close()
    if total is not None and total == offset:
        return total
    logger.info("Server rejected resume at byte %s (total %s); restarting.", offset, total)
    return _restart(url, part_path, timeout, progress)


def _restart(url, part_path, timeout, progress):
    """Drop the part file and fetch from byte 0 (no ``Range``, so this cannot recurse again)."""
    os.remove(part_path)
    return _transfer_once(url, part_path, timeout, progress)


_OFFLINE_ERRNOS = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN)


def _classify(err):
    """Map a low-level exception to a retry decision and a short, human-readable reason."""
    if isinstance(err, urllib.error.HTTPError):
        reason = f"HTTP {err.code} {err.reason}"
        err.close()
        if 400 <= err.code < 500 and err.code not in RETRYABLE_4XX:
            return _PermanentError(reason)
        return _TransientError(reason)
    if isinstance(err, urllib.error.URLError):
        inner = err.reason
        if isinstance(inner, socket.gaierror):
            return _PermanentError(f"the host name does not resolve ({inner.strerror or inner}); "
                                   "check the URL and the network")
        if isinstance(inner, _ConnectTimeout):
            return _PermanentError(f"cannot connect: {inner} (set {TIMEOUT_ENV_VAR} to wait longer)")
        if isinstance(inner, OSError) and inner.errno in _OFFLINE_ERRNOS:
            return _PermanentError(f"the network is unreachable ({inner.strerror})")
        return _TransientError(f"cannot reach server ({inner})")
    if isinstance(err, (socket.timeout, TimeoutError)):
        return _TransientError("timed out while receiving data")
    if isinstance(err, http.client.HTTPException):
        return _TransientError(f"broken HTTP response ({type(err).__name__}: {err})")
    return _TransientError(f"{type(err).__name__}: {err}")


class _ContentError(Exception):
    """Internal: the bytes that arrived are not a complete checkpoint (``resumable``: maybe cut short)."""

    def __init__(self, message, resumable):
        super().__init__(message)
        self.resumable = resumable


def _check_content(part_path, validate, total):
    """Run ``validate`` on the finished part file; decide whether more bytes could still fix it."""
    if validate is None:
        return
    try:
        validate(part_path)
    except (ValueError, OSError, pickle.UnpicklingError) as err:  # CheckpointError, UnsafeCheckpointError
        from ..engine.checkpoint import checkpoint_format

        known = checkpoint_format(part_path) not in ("unknown", "empty")
        # Without Content-Length a cut-short body looks complete to HTTP; a known format that ends
        # early may still be completed by resuming. A foreign body (HTML page, ...) cannot.
        text = str(err).replace(part_path, "the download")
        raise _ContentError(f"what arrived is not a complete checkpoint: {text}",
                            resumable=known and total is None) from None


def _fetch_with_retries(url, part_path, final_path, retries, timeout, progress, validate):
    """Run transfer attempts, resuming the part file, until one completes (and validates) or retries run out."""
    attempts = max(0, int(retries)) + 1
    for attempt in range(1, attempts + 1):
        try:
            total = _transfer_once(url, part_path, timeout, progress)
            _check_content(part_path, validate, total)
            return
        except _PermanentError as err:
            failure = err
        except _ContentError as err:
            if not err.resumable:
                os.remove(part_path)
                raise DownloadError(url, str(err), final_path) from None
            failure = err
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
    if isinstance(failure, _ContentError) and os.path.exists(part_path):
        os.remove(part_path)  # resuming did not complete it: do not build on these bytes again
    raise DownloadError(url, f"{failure} (after {attempts} attempt(s))", final_path)


def _verify_and_publish(url, part_path, final_path, expected):
    """Check digests of the finished part file, then atomically rename it to the final name."""
    mismatch = _first_mismatch(part_path, expected)
    if mismatch is not None:
        os.remove(part_path)
        raise ChecksumError(url, *mismatch, final_path)
    from .io import atomic_write

    with atomic_write(final_path + URL_SUFFIX, "w") as f:
        f.write(url + "\n")
    os.replace(part_path, final_path)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _default_validate(path):
    from ..engine.checkpoint import verify_checkpoint_file

    verify_checkpoint_file(path)


def download(url, dest_dir=None, sha256=None, md5=None, progress=True, retries=3, timeout=None,
             sha256_prefix=None, validate=True):
    """Return the local path of ``url``'s file, downloading it into the cache if needed.

    Args:
        url: http(s) URL; cached as ``<dest_dir>/<url_key(url)>_<file name>`` (see ``cache_path_for_url``).
        dest_dir: directory to store it in; default ``weights_cache_dir()``.
        sha256, md5: expected hex digests; when given, a cached file must match them and a fresh
            download is verified before it gets its final name.
        sha256_prefix: leading hex digits of the sha256 (mmdetection's file-name convention), checked likewise.
        progress: report progress (a bar on a terminal, a line every few seconds otherwise).
        retries: how many times a failed transfer is retried, resuming where it stopped.
        timeout: seconds, or ``(connect, read)``; default from ``PPDET_HTC_DOWNLOAD_TIMEOUT``, else (10, 20).
        validate: True checks that the content is a complete checkpoint (``verify_checkpoint_file``);
            False skips that; a callable ``f(path)`` that raises ``ValueError`` replaces it.

    Raises:
        ValueError: the URL is not http(s) or has no file name; a malformed timeout.
        DownloadError: network failure, HTTP error, content that is not a complete checkpoint, or
            transfer still incomplete after retries. The message names the URL and where to put the file.
        ChecksumError: the downloaded bytes do not match ``sha256``/``md5``/``sha256_prefix``.
    """
    _check_scheme(url)
    timeouts = download_timeouts(timeout)
    final_path = cache_path_for_url(url, dest_dir)
    expected = _expected_digests(sha256, md5, sha256_prefix)
    validate = _default_validate if validate is True else (validate or None)
    if os.path.isfile(final_path):
        _check_owner(url, final_path)
    if _is_valid_final(final_path, expected):
        return final_path
    os.makedirs(os.path.dirname(final_path), exist_ok=True)
    with _file_lock(final_path + LOCK_SUFFIX):
        # Another process may have finished the download while we waited for the lock.
        if os.path.isfile(final_path) and _first_mismatch(final_path, expected) is None:
            return final_path
        part_path = final_path + PART_SUFFIX
        logger.info("Downloading %s to %s", url, final_path)
        _fetch_with_retries(url, part_path, final_path, retries, timeouts, progress, validate)
        _verify_and_publish(url, part_path, final_path, expected)
    return final_path
