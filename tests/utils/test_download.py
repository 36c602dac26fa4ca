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
import re
import socket
import threading
import time
import urllib.error

import pytest

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
                 ignore_range=False, chunk_delay=0.0, on_midway=None):
        self.data = data
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
        self.send_header("Content-Length", str(len(body)))
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
    """Deterministic, non-repeating bytes so offsets mistakes change the digest."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


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
    assert path == str(tmp_path / "model.pdparams")
    assert read(path) == data
    assert not os.path.exists(path + ".part")
    (req,) = server.requests("model.pdparams")
    assert req["range"] is None and req["status"] == 200 and req["sent"] == len(data)


def test_cache_hit_does_not_contact_server(server, tmp_path):
    data = payload()
    url = server.add("cached.pdparams", data)
    (tmp_path / "cached.pdparams").write_bytes(data)
    cached = str(tmp_path / "cached.pdparams")
    assert download(url, dest_dir=str(tmp_path), sha256=sha(data)) == cached
    assert download(url, dest_dir=str(tmp_path)) == cached
    assert server.log == []


def test_cached_file_with_wrong_checksum_is_replaced(server, tmp_path):
    data = payload()
    url = server.add("stale.pdparams", data)
    (tmp_path / "stale.pdparams").write_bytes(b"old version")
    path = download(url, dest_dir=str(tmp_path), sha256=sha(data))
    assert read(path) == data
    assert len(server.requests("stale.pdparams")) == 1


def test_home_env_var_sets_cache_dir(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PPDET_HTC_HOME", str(tmp_path / "home"))
    data = payload(1000)
    url = server.add("envhome.pdparams", data)
    path = download(url, progress=False)
    assert path == str(tmp_path / "home" / "weights" / "envhome.pdparams")
    assert read(path) == data


def test_default_cache_dir_without_env_var(monkeypatch):
    monkeypatch.delenv("PPDET_HTC_HOME", raising=False)
    expected = os.path.join(os.path.expanduser("~"), ".cache", "ppdet_htc", "weights")
    assert dl.weights_cache_dir() == expected


def test_dest_dir_wins_over_env_var(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PPDET_HTC_HOME", str(tmp_path / "home"))
    url = server.add("explicit.pdparams", payload(100))
    assert download(url, dest_dir=str(tmp_path / "d")) == str(tmp_path / "d" / "explicit.pdparams")
    assert not (tmp_path / "home").exists()


def test_only_http_urls(tmp_path):
    with pytest.raises(ValueError, match="ftp://example.com/x.pdparams"):
        download("ftp://example.com/x.pdparams", dest_dir=str(tmp_path))
    with pytest.raises(ValueError, match="file name"):
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
    (tmp_path / "resume.pdparams.part").write_bytes(data[:done])
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
    assert not (tmp_path / "flaky.pdparams").exists()
    assert (tmp_path / "flaky.pdparams.part").stat().st_size == 3 * CHUNK
    server.routes["flaky.pdparams"].cut_after = None
    assert read(download(url, dest_dir=str(tmp_path))) == data
    assert server.requests("flaky.pdparams")[-1]["range"] == f"bytes={3 * CHUNK}-"


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = payload()
    url = server.add("norange.pdparams", data, ignore_range=True)
    (tmp_path / "norange.pdparams.part").write_bytes(b"x" * 5000)  # would corrupt if appended to
    path = download(url, dest_dir=str(tmp_path))
    assert read(path) == data
    (req,) = server.requests("norange.pdparams")
    assert req["range"] == "bytes=5000-" and req["status"] == 200


def test_416_with_complete_part_publishes_it(server, tmp_path):
    data = payload(1000)
    url = server.add("complete.pdparams", data)
    (tmp_path / "complete.pdparams.part").write_bytes(data)
    path = download(url, dest_dir=str(tmp_path), sha256=sha(data))
    assert read(path) == data
    assert [r["status"] for r in server.requests("complete.pdparams")] == [416]


def test_416_with_oversized_part_restarts(server, tmp_path):
    data = payload(1000)
    url = server.add("oversized.pdparams", data)
    (tmp_path / "oversized.pdparams.part").write_bytes(b"y" * 3000)
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
    assert str(tmp_path / "missing.pdparams") in message
    assert info.value.path == str(tmp_path / "missing.pdparams")
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
    data = payload()
    url = server.add("wrong.pdparams", b"not the weights" * 1000)
    with pytest.raises(ChecksumError) as info:
        download(url, dest_dir=str(tmp_path), sha256=sha(data))
    message = str(info.value)
    assert url in message and sha(data) in message
    assert sha(b"not the weights" * 1000) in message
    assert isinstance(info.value, DownloadError)
    assert sorted(os.listdir(tmp_path)) in ([], ["wrong.pdparams.lock"])


def test_md5_mismatch_raises(server, tmp_path):
    url = server.add("wrongmd5.pdparams", b"abc")
    with pytest.raises(ChecksumError, match="md5"):
        download(url, dest_dir=str(tmp_path), md5="0" * 32)
    assert not (tmp_path / "wrongmd5.pdparams").exists()


def test_unreachable_host_raises_download_error_with_manual_path(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/weights/model.pdparams"
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir=str(tmp_path), retries=1, timeout=5)
    message = str(info.value)
    assert url in message
    assert str(tmp_path / "model.pdparams") in message
    assert "place it by hand" in message


def test_dns_failure_raises_download_error(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    url = "https://weights.example.invalid/model.pdparams"
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir=str(tmp_path), retries=0)
    assert url in str(info.value) and "Name or service not known" in str(info.value)
    assert str(tmp_path / "model.pdparams") in str(info.value)


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
    final = tmp_path / "atomic.pdparams"
    seen = {}

    def midway():  # runs in the server thread while the body is half sent
        part = tmp_path / "atomic.pdparams.part"
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
    expected = (str(tmp_path / "shared.pdparams"), sha(data))
    assert outcomes == [expected, expected]
    (req,) = server.requests("shared.pdparams")
    assert req["range"] is None and req["sent"] == len(data)
    assert not (tmp_path / "shared.pdparams.part").exists()


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
    assert paths == [str(tmp_path / "threads.pdparams")] * 2
    assert len(server.requests("threads.pdparams")) == 1
    assert read(paths[0]) == data


def test_urlerror_is_classified_as_transient():
    assert isinstance(dl._classify(urllib.error.URLError("refused")), dl._TransientError)
