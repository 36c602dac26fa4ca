"""Tests of ppdet_htc.utils.download against a local HTTP server (no internet needed).

The server (``LocalServer``) serves in-memory files, honours ``Range`` and can be told per file to
cut the connection, ignore ``Range``, answer an error status or go slowly; it logs every request
so tests can check what actually went over the wire.
"""
import hashlib
import importlib
import http.server
import multiprocessing
import os
import pickle
import re
import socket
import threading
import time
import urllib.error

import numpy as np
import pytest

from ppdet_htc.errors import ConfigError
from ppdet_htc.utils.download import ChecksumError, DownloadError, download

# import_module returns the module even if ppdet_htc.utils re-exports a function named download
dl = importlib.import_module("ppdet_htc.utils.download")

CHUNK = 16 * 1024


# --------------------------------------------------------------------------------------------
# Local test server
# --------------------------------------------------------------------------------------------


class Route:
    """What the server does for one file name."""

    def __init__(self, data, status=None, fail_times=None, cut_after=None, cut_times=None,
                 ignore_range=False, chunk_delay=0.0, on_midway=None, no_length=False, content_type=None):
        self.data = data
        self.no_length = no_length  # omit Content-Length: the body ends when the connection closes
        self.content_type = content_type
        self.status = status  # answer this HTTP status instead of the file ...
        self.fail_times = fail_times  # ... for the first n requests (None: always)
        self.cut_after = cut_after  # close the connection after this many body bytes ...
        self.cut_times = cut_times  # ... in the first n responses (None: always)
        self.ignore_range = ignore_range  # answer 200 with the whole file even to a Range request
        self.chunk_delay = chunk_delay  # seconds to sleep between 16 KiB chunks
        self.on_midway = on_midway  # called once half of a body has been sent
        self.requests = 0
        self.cuts = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        owner = self.server.owner
        name = self.path.lstrip("/")
        entry = owner.record(name, self.headers.get("Range"))
        route = owner.routes.get(name)
        if route is None:
            return self._status_only(entry, 404)
        with owner.lock:
            index = route.requests
            route.requests += 1
        if route.status and (route.fail_times is None or index < route.fail_times):
            return self._status_only(entry, route.status)
        self._serve(entry, route)

    def _status_only(self, entry, code, extra_headers=()):
        entry["status"] = code
        self.send_response(code)
        for key, value in extra_headers:
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _requested_start(self, route):
        value = self.headers.get("Range")
        if not value or route.ignore_range:
            return None
        return int(re.match(r"bytes=(\d+)-", value).group(1))

    def _serve(self, entry, route):
        data = route.data
        start = self._requested_start(route)
        if start is not None and start >= len(data):
            return self._status_only(entry, 416, [("Content-Range", f"bytes */{len(data)}")])
        body = data[start or 0:]
        entry["status"] = 206 if start is not None else 200
        self.send_response(entry["status"])
        if not route.no_length:
            self.send_header("Content-Length", str(len(body)))
        if route.content_type:
            self.send_header("Content-Type", route.content_type)
        if start is not None:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Connection", "close")
        self.end_headers()
        self._write_body(entry, route, body)

    def _write_body(self, entry, route, body):
        limit = len(body)
        cut = route.cut_after is not None and (
            route.cut_times is None or route.cuts < route.cut_times)
        if cut:
            route.cuts += 1
            limit = min(limit, route.cut_after)
        for offset in range(0, limit, CHUNK):
            self.wfile.write(body[offset:min(offset + CHUNK, limit)])
            self.wfile.flush()
            entry["sent"] = min(offset + CHUNK, limit)
            if offset < limit // 2 <= offset + CHUNK and route.on_midway is not None:
                route.on_midway()
            time.sleep(route.chunk_delay)
        self.close_connection = True
        if cut:
            self.connection.shutdown(socket.SHUT_RDWR)


class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1 serving registered in-memory files."""

    def __init__(self):
        self.routes = {}
        self.log = []
        self.lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def add(self, name, data, **behaviour):
        """Register ``data`` under ``/name`` and return its URL."""
        self.routes[name] = Route(data, **behaviour)
        return self.url(name)

    def url(self, name):
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def record(self, name, range_header):
        entry = {"path": name, "range": range_header, "status": None, "sent": 0}
        with self.lock:
            self.log.append(entry)
        return entry

    def requests(self, name):
        with self.lock:
            return [dict(e) for e in self.log if e["path"] == name]


@pytest.fixture
def server():
    srv = LocalServer().start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    """Retries should not sleep in tests."""
    monkeypatch.setattr(dl, "RETRY_BACKOFF", 0.0)


def payload(size=200_000, seed=1):
    """A complete ``.pdparams`` checkpoint of about ``size`` bytes whose content never repeats (so offset
    mistakes change the digest, and a cut anywhere leaves an incomplete pickle)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return pickle.dumps({"w": np.frombuffer(bytes(out[:size]), np.uint8)}, protocol=4)


def cached(directory, url):
    """Where ``download(url, dest_dir=directory)`` keeps the file: ``<sha256(url)[:8]>_<name>``."""
    return dl.cache_path_for_url(url, str(directory))


def sha(data):
    return hashlib.sha256(data).hexdigest()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# --------------------------------------------------------------------------------------------
# Normal download, cache, paths
# --------------------------------------------------------------------------------------------


def test_download_fresh_file_verified_and_no_leftovers(server, tmp_path):
    data = payload()
    url = server.add("model.pdparams", data)
    md5 = hashlib.md5(data).hexdigest()
    path = download(url, dest_dir=str(tmp_path), sha256=sha(data), md5=md5)
    assert path == cached(tmp_path, url)
    assert re.fullmatch(r"[0-9a-f]{8}_model\.pdparams", os.path.basename(path))
    assert read(path + ".url").strip() == url.encode()
    assert read(path) == data
    assert not os.path.exists(path + ".part")
    (req,) = server.requests("model.pdparams")
    assert req["range"] is None and req["status"] == 200 and req["sent"] == len(data)


def test_cache_hit_does_not_contact_server(server, tmp_path):
    data = payload()
    url = server.add("cached.pdparams", data)
    entry = cached(tmp_path, url)
    with open(entry, "wb") as f:  # placed by hand where the error message says
        f.write(data)
    assert download(url, dest_dir=str(tmp_path), sha256=sha(data)) == entry
    assert download(url, dest_dir=str(tmp_path)) == entry
    assert server.log == []


def test_cached_file_with_wrong_checksum_is_replaced(server, tmp_path):
    data = payload()
    url = server.add("stale.pdparams", data)
    with open(cached(tmp_path, url), "wb") as f:
        f.write(b"old version")
    path = download(url, dest_dir=str(tmp_path), sha256=sha(data))
    assert read(path) == data
    assert len(server.requests("stale.pdparams")) == 1


def test_home_env_var_sets_cache_dir(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PPDET_HTC_HOME", str(tmp_path / "home"))
    data = payload(1000)
    url = server.add("envhome.pdparams", data)
    path = download(url, progress=False)
    assert path == cached(tmp_path / "home" / "weights", url)
    assert read(path) == data


def test_default_cache_dir_without_env_var(monkeypatch):
    monkeypatch.delenv("PPDET_HTC_HOME", raising=False)
    expected = os.path.join(os.path.expanduser("~"), ".cache", "ppdet_htc", "weights")
    assert dl.weights_cache_dir() == expected


def test_dest_dir_wins_over_env_var(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PPDET_HTC_HOME", str(tmp_path / "home"))
    url = server.add("explicit.pdparams", payload(100))
    assert download(url, dest_dir=str(tmp_path / "d")) == cached(tmp_path / "d", url)
    assert not (tmp_path / "home").exists()


def test_only_http_urls(tmp_path):
    with pytest.raises(ConfigError, match="ftp://example.com/x.pdparams"):
        download("ftp://example.com/x.pdparams", dest_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="file name"):
        download("http://example.com/", dest_dir=str(tmp_path))


def test_no_progress_output_when_not_a_tty(server, tmp_path, capfd):
    url = server.add("quiet.pdparams", payload(100_000))
    download(url, dest_dir=str(tmp_path), progress=True)
    assert "%|" not in capfd.readouterr().err


# --------------------------------------------------------------------------------------------
# Resume, truncation, misbehaving servers
# --------------------------------------------------------------------------------------------


def test_resume_from_existing_part_sends_range_and_gets_only_the_rest(server, tmp_path):
    data = payload()
    url = server.add("resume.pdparams", data)
    done = 70_000
    with open(cached(tmp_path, url) + ".part", "wb") as f:
        f.write(data[:done])
    path = download(url, dest_dir=str(tmp_path), sha256=sha(data))
    assert read(path) == data
    (req,) = server.requests("resume.pdparams")
    assert req["range"] == f"bytes={done}-"
    assert req["status"] == 206 and req["sent"] == len(data) - done


def test_truncated_transfer_is_resumed(server, tmp_path):
    data = payload()
    url = server.add("cut.pdparams", data, cut_after=50_000, cut_times=1)
    path = download(url, dest_dir=str(tmp_path), sha256=sha(data), retries=2)
    assert read(path) == data
    first, second = server.requests("cut.pdparams")
    assert first["range"] is None and first["sent"] == 50_000
    assert second["range"] == "bytes=50000-" and second["sent"] == len(data) - 50_000


def test_truncated_transfer_without_checksum_is_still_detected(server, tmp_path):
    data = payload()
    url = server.add("cut2.pdparams", data, cut_after=CHUNK, cut_times=2)
    path = download(url, dest_dir=str(tmp_path), retries=3)
    assert read(path) == data
    assert [r["range"] for r in server.requests("cut2.pdparams")] == [
        None, f"bytes={CHUNK}-", f"bytes={2 * CHUNK}-"]


def test_persistent_truncation_raises_and_keeps_part_for_later(server, tmp_path):
    data = payload()
    url = server.add("flaky.pdparams", data, cut_after=CHUNK)
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir=str(tmp_path), retries=2)
    assert url in str(info.value) and "3 attempt" in str(info.value)
    assert not os.path.exists(cached(tmp_path, url))
    assert os.path.getsize(cached(tmp_path, url) + ".part") == 3 * CHUNK
    server.routes["flaky.pdparams"].cut_after = None
    assert read(download(url, dest_dir=str(tmp_path))) == data
    assert server.requests("flaky.pdparams")[-1]["range"] == f"bytes={3 * CHUNK}-"


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = payload()
    url = server.add("norange.pdparams", data, ignore_range=True)
    with open(cached(tmp_path, url) + ".part", "wb") as f:
        f.write(b"x" * 5000)  # would corrupt if appended to
    path = download(url, dest_dir=str(tmp_path))
    assert read(path) == data
    (req,) = server.requests("norange.pdparams")
    assert req["range"] == "bytes=5000-" and req["status"] == 200


def test_416_with_complete_part_publishes_it(server, tmp_path):
    data = payload(1000)
    url = server.add("complete.pdparams", data)
    with open(cached(tmp_path, url) + ".part", "wb") as f:
        f.write(data)
    path = download(url, dest_dir=str(tmp_path), sha256=sha(data))
    assert read(path) == data
    assert [r["status"] for r in server.requests("complete.pdparams")] == [416]


def test_416_with_oversized_part_restarts(server, tmp_path):
    data = payload(1000)
    url = server.add("oversized.pdparams", data)
    with open(cached(tmp_path, url) + ".part", "wb") as f:
        f.write(b"y" * 3000)
    path = download(url, dest_dir=str(tmp_path), sha256=sha(data))
    assert read(path) == data
    assert [(r["status"], r["range"]) for r in server.requests("oversized.pdparams")] == [
        (416, "bytes=3000-"), (200, None)]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_404_is_not_retried_and_names_url_and_manual_path(server, tmp_path):
    url = server.url("missing.pdparams")
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir=str(tmp_path), retries=3)
    message = str(info.value)
    assert url in message and "404" in message
    assert cached(tmp_path, url) in message
    assert info.value.path == cached(tmp_path, url)
    assert len(server.requests("missing.pdparams")) == 1


def test_500_is_retried_then_succeeds(server, tmp_path):
    data = payload(5000)
    url = server.add("busy.pdparams", data, status=500, fail_times=2)
    assert read(download(url, dest_dir=str(tmp_path), retries=2)) == data
    assert [r["status"] for r in server.requests("busy.pdparams")] == [500, 500, 200]


def test_500_after_all_retries_raises(server, tmp_path):
    url = server.add("down.pdparams", b"", status=500)
    with pytest.raises(DownloadError, match="HTTP 500") as info:
        download(url, dest_dir=str(tmp_path), retries=1)
    assert url in str(info.value)
    assert len(server.requests("down.pdparams")) == 2


def test_checksum_mismatch_raises_and_leaves_nothing(server, tmp_path):
    data, other = payload(), payload(seed=2)
    url = server.add("wrong.pdparams", other)
    with pytest.raises(ChecksumError) as info:
        download(url, dest_dir=str(tmp_path), sha256=sha(data))
    message = str(info.value)
    assert url in message and sha(data) in message
    assert sha(other) in message
    assert isinstance(info.value, DownloadError)
    assert sorted(os.listdir(tmp_path)) in ([], [os.path.basename(cached(tmp_path, url)) + ".lock"])


def test_md5_mismatch_raises(server, tmp_path):
    url = server.add("wrongmd5.pdparams", payload(100))
    with pytest.raises(ChecksumError, match="md5"):
        download(url, dest_dir=str(tmp_path), md5="0" * 32)
    assert not os.path.exists(cached(tmp_path, url))


def test_unreachable_host_raises_download_error_with_manual_path(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/weights/model.pdparams"
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir=str(tmp_path), retries=1, timeout=5)
    message = str(info.value)
    assert url in message
    assert cached(tmp_path, url) in message
    assert "place it by hand" in message


def test_dns_failure_raises_download_error(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    url = "https://weights.example.invalid/model.pdparams"
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir=str(tmp_path), retries=0)
    assert url in str(info.value) and "Name or service not known" in str(info.value)
    assert cached(tmp_path, url) in str(info.value)


def test_errors_survive_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(ChecksumError("http://h/a", "sha256", "aa", "bb", "/p/a")))
    assert isinstance(err, ChecksumError) and "http://h/a" in str(err) and err.actual == "bb"
    err = pickle.loads(pickle.dumps(DownloadError("http://h/a", "boom", "/p/a")))
    assert "boom" in str(err) and err.path == "/p/a"


# --------------------------------------------------------------------------------------------
# Atomicity and concurrency
# --------------------------------------------------------------------------------------------


def test_final_file_appears_only_after_verification(server, tmp_path, monkeypatch):
    data = payload()
    url = server.url("atomic.pdparams")
    final = tmp_path / os.path.basename(cached(tmp_path, url))
    seen = {}

    def midway():  # runs in the server thread while the body is half sent
        part = tmp_path / (final.name + ".part")
        deadline = time.monotonic() + 5
        while not part.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        seen["midway"] = (final.exists(), part.exists())

    real_digest = dl.file_digest

    def digest(path, algorithm="sha256"):
        seen.setdefault("at_verify", final.exists())
        return real_digest(path, algorithm)

    monkeypatch.setattr(dl, "file_digest", digest)
    url = server.add("atomic.pdparams", data, chunk_delay=0.01, on_midway=midway)
    download(url, dest_dir=str(tmp_path), sha256=sha(data))
    assert seen == {"midway": (False, True), "at_verify": False}
    assert read(final) == data


def _download_in_child(url, dest_dir, digest, barrier, results):
    barrier.wait(timeout=60)
    try:
        path = download(url, dest_dir=dest_dir, sha256=digest, progress=False)
        results.put((path, sha(read(path))))
    except Exception as err:  # reported to the parent test
        results.put(("error", repr(err)))


def test_concurrent_processes_share_one_download(server, tmp_path):
    data = payload(400_000)
    url = server.add("shared.pdparams", data, chunk_delay=0.02)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_download_in_child,
                         args=(url, str(tmp_path), sha(data), barrier, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    expected = (cached(tmp_path, url), sha(data))
    assert outcomes == [expected, expected]
    (req,) = server.requests("shared.pdparams")
    assert req["range"] is None and req["sent"] == len(data)
    assert not os.path.exists(cached(tmp_path, url) + ".part")


def test_lock_makes_second_caller_wait_then_reuse(server, tmp_path):
    """Same guarantee as above, within one process (threads), to pin down the lock order."""
    data = payload(200_000)
    url = server.add("threads.pdparams", data, chunk_delay=0.01)
    paths = []
    workers = [threading.Thread(target=lambda: paths.append(download(url, dest_dir=str(tmp_path))))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert paths == [cached(tmp_path, url)] * 2
    assert len(server.requests("threads.pdparams")) == 1
    assert read(paths[0]) == data


def test_urlerror_is_classified_as_transient():
    assert isinstance(dl._classify(urllib.error.URLError("refused")), dl._TransientError)


# --------------------------------------------------------------------------------------------
# The cache never returns a wrong or broken file (issue 11 item 2)
# --------------------------------------------------------------------------------------------


def test_two_urls_with_one_file_name_are_two_entries(server, tmp_path):
    first, second = payload(seed=3), payload(seed=4)
    url_a = server.add("a/model_final.pdparams", first)
    url_b = server.add("b/model_final.pdparams", second)
    path_a = download(url_a, dest_dir=str(tmp_path))
    path_b = download(url_b, dest_dir=str(tmp_path))
    assert path_a != path_b
    assert os.path.basename(path_a).endswith("_model_final.pdparams")
    assert read(path_a) == first and read(path_b) == second
    assert download(url_a, dest_dir=str(tmp_path)) == path_a  # cache hits keep them apart
    assert len(server.requests("a/model_final.pdparams")) == 1
    assert len(server.requests("b/model_final.pdparams")) == 1


def test_entry_recorded_for_another_url_is_not_reused(server, tmp_path):
    url = server.add("x.pdparams", payload())
    entry = cached(tmp_path, url)
    with open(entry, "wb") as f:
        f.write(payload(seed=9))
    with open(entry + ".url", "w") as f:
        f.write("http://elsewhere.example/x.pdparams\n")
    with pytest.raises(DownloadError, match="belongs to another URL") as info:
        download(url, dest_dir=str(tmp_path))
    assert "http://elsewhere.example/x.pdparams" in str(info.value)
    assert server.log == []


def test_no_content_length_cut_short_is_never_published(server, tmp_path):
    """A server without Content-Length and without Range support that always closes early."""
    data = payload()
    url = server.add("nolen.pdparams", data, no_length=True, cut_after=60_000, ignore_range=True)
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir=str(tmp_path), retries=2)
    message = str(info.value)
    assert url in message and "not a complete checkpoint" in message and "truncated" in message
    assert "3 attempt" in message
    assert not os.path.exists(cached(tmp_path, url))
    assert not os.path.exists(cached(tmp_path, url) + ".part")  # these bytes are not built upon again
    ranges = [r["range"] for r in server.requests("nolen.pdparams")]
    assert ranges == [None, "bytes=60000-", "bytes=60000-"]  # it tried to resume each time


def test_no_content_length_cut_short_with_range_support_keeps_the_part(server, tmp_path):
    """Resumed responses carry Content-Range, so the size becomes known; the part stays for a later resume."""
    data = payload()
    url = server.add("nolen2.pdparams", data, no_length=True, cut_after=60_000)
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir=str(tmp_path), retries=2)
    assert url in str(info.value) and "3 attempt" in str(info.value)
    assert not os.path.exists(cached(tmp_path, url))
    assert os.path.getsize(cached(tmp_path, url) + ".part") == 180_000
    server.routes["nolen2.pdparams"].cut_after = None
    assert read(download(url, dest_dir=str(tmp_path))) == data


def test_no_content_length_cut_once_is_resumed_to_a_complete_file(server, tmp_path):
    data = payload()
    url = server.add("nolen_once.pdparams", data, no_length=True, cut_after=70_000, cut_times=1)
    path = download(url, dest_dir=str(tmp_path), retries=2)
    assert read(path) == data
    assert [r["range"] for r in server.requests("nolen_once.pdparams")] == [None, "bytes=70000-"]


@pytest.mark.parametrize("no_length", [False, True])
def test_html_page_with_status_200_is_refused(server, tmp_path, no_length):
    page = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please log in</body></html>"
    url = server.add("blocked.pdparams", page, no_length=no_length, content_type="text/html")
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir=str(tmp_path), retries=3)
    message = str(info.value)
    assert url in message and "an HTML page of {} bytes".format(len(page)) in message and "<!DOCTYPE html>" in message
    assert not os.path.exists(cached(tmp_path, url))
    assert not os.path.exists(cached(tmp_path, url) + ".part")
    assert len(server.requests("blocked.pdparams")) == 1  # a foreign body is not retried


@pytest.mark.parametrize("body, what", [(b"", "empty"), (b"\x00\x01garbage" * 100, "binary data")])
def test_other_non_checkpoints_are_refused(server, tmp_path, body, what):
    url = server.add("odd.pdparams", body)
    with pytest.raises(DownloadError, match=what):
        download(url, dest_dir=str(tmp_path))
    assert not os.path.exists(cached(tmp_path, url))


def test_crafted_pickle_download_is_refused_and_not_run(server, tmp_path):
    marker = tmp_path / "pwned"
    evil = b"\x80\x02}X\x01\x00\x00\x00acposix\nsystem\nX" + bytes([len("touch ") + len(str(marker))]) \
        + b"\x00\x00\x00touch " + str(marker).encode() + b"\x85Rs."
    url = server.add("evil.pdparams", evil)
    with pytest.raises(DownloadError, match="posix.system"):
        download(url, dest_dir=str(tmp_path))
    assert not marker.exists() and not os.path.exists(cached(tmp_path, url))


def test_pth_and_npz_downloads_are_accepted(server, tmp_path):
    import io as _io

    from tests.engine.pth_writer import write_pth

    write_pth(str(tmp_path / "m.pth"), {"state_dict": {"a": np.arange(3, dtype=np.float32)}}, fmt="legacy")
    buf = _io.BytesIO()
    np.savez(buf, a=np.arange(3, dtype=np.float32))
    for name, data in (("m.pth", read(str(tmp_path / "m.pth"))), ("w.npz", buf.getvalue())):
        url = server.add(name, data)
        assert read(download(url, dest_dir=str(tmp_path / "cache"))) == data


def test_validate_false_downloads_any_bytes(server, tmp_path):
    url = server.add("notes.txt", b"plain text")
    assert read(download(url, dest_dir=str(tmp_path), validate=False)) == b"plain text"


def test_sha256_prefix_is_checked(server, tmp_path):
    data = payload()
    url = server.add("prefixed.pdparams", data)
    assert read(download(url, dest_dir=str(tmp_path), sha256_prefix=sha(data)[:8])) == data
    url2 = server.add("prefixed2.pdparams", data)
    with pytest.raises(ChecksumError, match="deadbeef... \\(a prefix\\)"):
        download(url2, dest_dir=str(tmp_path), sha256_prefix="deadbeef")
    assert not os.path.exists(cached(tmp_path, url2))


# --------------------------------------------------------------------------------------------
# Fail fast
# --------------------------------------------------------------------------------------------


def test_unresolvable_host_is_not_retried(tmp_path, monkeypatch):
    calls = []

    def no_dns(*args, **kwargs):
        calls.append(args[0])
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(dl, "RETRY_BACKOFF", 5.0)  # a retry would make this test slow
    url = "https://download.example.invalid/htc.pth"
    start = time.monotonic()
    with pytest.raises(DownloadError, match="does not resolve") as info:
        download(url, dest_dir=str(tmp_path), retries=3)
    assert time.monotonic() - start < 2
    assert calls == ["download.example.invalid"]
    assert cached(tmp_path, url) in str(info.value)


def test_connect_timeout_is_not_retried(tmp_path, monkeypatch):
    calls = []

    def slow_connect(address, timeout=None, *args, **kwargs):
        calls.append(timeout)
        raise socket.timeout("timed out")

    monkeypatch.setattr(socket, "create_connection", slow_connect)
    monkeypatch.setenv("PPDET_HTC_DOWNLOAD_TIMEOUT", "3,7")
    with pytest.raises(DownloadError, match="no connection within 3 s") as info:
        download("http://127.0.0.1:9/x.pdparams", dest_dir=str(tmp_path), retries=3)
    assert calls == [3.0] and "PPDET_HTC_DOWNLOAD_TIMEOUT" in str(info.value)


class SilentServer:
    """Accepts connections and never answers (a hung server or a black-holing proxy)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.accepted = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def url(self, name):
        return "http://127.0.0.1:{}/{}".format(self.sock.getsockname()[1], name)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_server_that_never_answers_fails_fast_saying_so(tmp_path, monkeypatch):
    silent = SilentServer()
    try:
        monkeypatch.setenv("PPDET_HTC_DOWNLOAD_TIMEOUT", "1")
        monkeypatch.setattr(dl, "RETRY_BACKOFF", 5.0)
        url = silent.url("hung.pdparams")
        start = time.monotonic()
        with pytest.raises(DownloadError) as info:
            download(url, dest_dir=str(tmp_path), retries=3)
        elapsed = time.monotonic() - start
    finally:
        silent.close()
    assert elapsed < 4, elapsed  # one read timeout, no retries
    assert "did not answer within 1 s" in str(info.value) and url in str(info.value)
    assert len(silent.accepted) == 1


def test_default_timeouts_fail_a_silent_server_within_about_30_s(monkeypatch):
    monkeypatch.delenv("PPDET_HTC_DOWNLOAD_TIMEOUT", raising=False)
    connect, read_timeout = dl.download_timeouts()
    assert 0 < connect <= 15 and 0 < read_timeout <= 30


@pytest.mark.parametrize("value, expected", [("30", (30.0, 30.0)), ("5,60", (5.0, 60.0)), (" 2.5 ", (2.5, 2.5))])
def test_timeout_env_var(monkeypatch, value, expected):
    monkeypatch.setenv("PPDET_HTC_DOWNLOAD_TIMEOUT", value)
    assert dl.download_timeouts() == expected
    assert dl.download_timeouts(4) == (4.0, 4.0)  # an explicit argument wins
    assert dl.download_timeouts((1, 2)) == (1.0, 2.0)


@pytest.mark.parametrize("value", ["soon", "1,2,3", "0", "-5", "1,"])
def test_bad_timeout_env_var_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("PPDET_HTC_DOWNLOAD_TIMEOUT", value)
    with pytest.raises(ConfigError, match="PPDET_HTC_DOWNLOAD_TIMEOUT"):
        dl.download_timeouts()


def test_stall_in_the_middle_of_the_body_is_resumed(server, tmp_path, monkeypatch):
    data = payload()
    url = server.add("stall.pdparams", data, chunk_delay=0.0)
    route = server.routes["stall.pdparams"]
    real_write = _Handler._write_body

    def stalling(self, entry, r, body):
        if r is route and route.requests == 1:  # first response: send a little, then hang
            self.wfile.write(body[:CHUNK])
            self.wfile.flush()
            entry["sent"] = CHUNK
            time.sleep(2.5)
            self.close_connection = True
            return
        return real_write(self, entry, r, body)

    monkeypatch.setattr(_Handler, "_write_body", stalling)
    monkeypatch.setenv("PPDET_HTC_DOWNLOAD_TIMEOUT", "1")
    path = download(url, dest_dir=str(tmp_path), retries=2)
    assert read(path) == data
    assert [r["range"] for r in server.requests("stall.pdparams")] == [None, "bytes={}-".format(CHUNK)]


def test_cli_reports_a_failed_download_in_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys):
    """The CLI's user-error channel (cli.report_error): exactly one ``error: ...`` line on stderr, no traceback."""
    import cv2

    from ppdet_htc.cli import infer_main
    from tests.conftest import REPO_ROOT

    monkeypatch.setenv("PPDET_HTC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PPDET_HTC_DEBUG", raising=False)
    image = str(tmp_path / "img.png")
    cv2.imwrite(image, np.zeros((32, 32, 3), np.uint8))
    url = "http://127.0.0.1:{}/weights/model_final.pdparams".format(closed_port())
    with pytest.raises(SystemExit) as info:
        infer_main(["-c", os.path.join(REPO_ROOT, "tests", "fixtures", "htc_tiny.yml"), "-o", "weights=" + url,
                    "--infer_img", image, "--output_dir", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: Could not download " + url), err
    assert dl.cache_path_for_url(url, str(tmp_path / "home" / "weights")) in errors[0]
    assert "Traceback" not in err
