"""A real HTTP file server on 127.0.0.1 for download tests, with fault injection.

Serves in-memory files under ``/webssl/<name>`` like ``dl.fbaipublicfiles.com`` does: HEAD and
GET, ``Range: bytes=N-`` (206 + Content-Range, 416 past the end), ``If-Range`` against the ETag,
a strong ETag (the sha256 by default) and Last-Modified. Knobs, all changeable while running:

- ``drop_after``/``drops``: the next ``drops`` GETs close the connection after ``drop_after``
  body bytes (a connection dropped half-way);
- ``ignore_range``: answer 200 with the whole file even when a range is asked;
- ``etag``: per-file ETag override (e.g. a sha256 of other bytes, to provoke a mismatch);
- ``gate``: a threading.Event every GET waits on before sending its body;
- ``chunk_delay``: seconds to sleep between 64 KiB chunks (slows a download down).

Also holds :class:`BackgroundServer`, the thread runner with a request log that
``hf_server`` reuses.
"""
from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from requests.structures import CaseInsensitiveDict

CHUNK = 64 << 10
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Request:
    method: str
    path: str
    headers: CaseInsensitiveDict = field(default_factory=CaseInsensitiveDict)  # as received


class BackgroundServer:
    """Run ``handler`` on 127.0.0.1 (free port) in a daemon thread and log every request."""

    handler: type[BaseHTTPRequestHandler]

    def __init__(self) -> None:
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def record(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.log.append(Request(handler.command, handler.path,
                                    CaseInsensitiveDict(handler.headers.items())))

    def requests(self, method: str | None = None, contains: str = "") -> list[Request]:
        with self._lock:
            return [r for r in self.log
                    if (method is None or r.method == method) and contains in r.path]

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    def start(self):
        server = self

        class Handler(self.handler):   # type: ignore[misc, valid-type, name-defined]
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def send_body(handler: BaseHTTPRequestHandler, body: bytes, *, drop_after: int | None = None,
              chunk_delay: float = 0.0) -> None:
    """Write ``body`` in chunks; with ``drop_after``, cut the connection after that many bytes."""
    sent = 0
    limit = len(body) if drop_after is None else min(drop_after, len(body))
    while sent < limit:
        block = body[sent:min(sent + CHUNK, limit)]
        handler.wfile.write(block)
        sent += len(block)
        if chunk_delay:
            time.sleep(chunk_delay)
    handler.wfile.flush()
    if drop_after is not None and limit < len(body):
        handler.close_connection = True
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _FileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: "RangeServer"

    def log_message(self, *args) -> None:   # keep test output clean
        pass

    def _lookup(self) -> tuple[str, bytes] | None:
        prefix = self.owner.prefix
        if not self.path.startswith(prefix):
            return None
        name = self.path[len(prefix):]
        data = self.owner.files.get(name)
        return None if data is None else (name, data)

    def _not_found(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _common_headers(self, name: str) -> None:
        etag = self.owner.etag_of(name)
        if etag is not None:
            self.send_header("ETag", etag)
        self.send_header("Last-Modified", self.owner.last_modified)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")

    def do_HEAD(self) -> None:
        self.owner.record(self)
        found = self._lookup()
        if found is None:
            return self._not_found()
        name, data = found
        self.send_response(200)
        self._common_headers(name)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()

    def do_GET(self) -> None:
        owner = self.owner
        owner.record(self)
        found = self._lookup()
        if found is None:
            return self._not_found()
        name, data = found
        start = 0
        rng = _RANGE.match(self.headers.get("Range", "").strip())
        if_range = self.headers.get("If-Range")
        use_range = rng is not None and not owner.ignore_range and (
            if_range is None or if_range in (owner.etag_of(name), owner.last_modified))
        if use_range:
            start = int(rng.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        drop_after = owner.take_drop()
        if owner.gate is not None:
            owner.gate_reached.set()
            owner.gate.wait(timeout=60)
        self.send_response(206 if use_range else 200)
        self._common_headers(name)
        if use_range:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        send_body(self, body, drop_after=drop_after, chunk_delay=owner.chunk_delay)


class RangeServer(BackgroundServer):
    """``RangeServer({"a.pth": b"..."})``; ``base_url`` is what WEBSSL_PTH_BASE_URL takes."""

    handler = _FileHandler

    def __init__(self, files: dict[str, bytes], prefix: str = "/webssl/") -> None:
        super().__init__()
        self.files = dict(files)
        self.prefix = prefix
        self.etag: dict[str, str | None] = {}
        self.last_modified = "Wed, 01 Jan 2025 00:00:00 GMT"
        self.ignore_range = False
        self.drop_after: int | None = None
        self.drops = 0
        self.chunk_delay = 0.0
        self.gate: threading.Event | None = None
        self.gate_reached = threading.Event()
        self._drop_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix.rstrip('/')}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def etag_of(self, name: str) -> str | None:
        if name in self.etag:
            return self.etag[name]
        return '"' + hashlib.sha256(self.files[name]).hexdigest() + '"'

    def take_drop(self) -> int | None:
        with self._drop_lock:
            if self.drops > 0 and self.drop_after is not None:
                self.drops -= 1
                return self.drop_after
            return None
