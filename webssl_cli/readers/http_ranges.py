"""Random access to one ``http(s)://`` file through ``Range`` requests, for Parquet inputs
(pyarrow reads the footer first, then the column chunks it needs).

Every request is retried while it fails transiently (``retry.py``: connection errors, idle
reads, bodies cut short, 408/429/5xx). Each ranged request carries ``If-Range`` with the
file's strong ETag or Last-Modified from the first answer, so a file replaced on the server
while it is read is an error (rerun), never a mix of two versions. A server that ignores
``Range`` (answers 200 with the whole body) is read once into memory instead.
"""
from __future__ import annotations

import io
from typing import Any

from .http_stream import http_session, http_timeout
from .retry import is_transient_status, network_errors_transient, status_failure, with_retries


class HttpFileChanged(OSError):
    """The file on the server changed between two requests of one read."""


class HttpRangeFile(io.RawIOBase):
    """A read-only, seekable file over ``url`` (wrap it in ``io.BufferedReader`` for small
    reads). Raises ``TransientNetworkError`` when failures persist, ``OSError`` for a final
    HTTP error, :class:`HttpFileChanged` when the file changed while being read."""

    def __init__(self, url: str, session: Any | None = None,
                 timeout: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.url = url
        self.session = session or http_session()
        self.timeout = timeout or http_timeout()
        self.pos = 0
        self.etag: str | None = None
        self.validator: str | None = None
        self.whole: bytes | None = None     # the body, when the server ignores Range
        self.size = -1                      # unknown until the probe
        self.size = self._probe()

    def _probe(self) -> int:
        """Size from a one-byte request (``bytes=0-0``); keeps the validators for later."""
        resp, body = self._get(0, 0)
        self.etag = resp.headers.get("ETag")
        strong = self.etag if self.etag and not self.etag.startswith("W/") else None
        self.validator = strong or resp.headers.get("Last-Modified")
        if resp.status_code == 200:
            self.whole = body
            return len(body)
        total = resp.headers.get("Content-Range", "").rpartition("/")[2].strip()
        if not total.isdigit():
            raise OSError(f"{self.url}: the server sent Content-Range "
                          f"{resp.headers.get('Content-Range')!r} without the file's size, "
                          "which reading a Parquet file by ranges needs; download the file "
                          "and pass its local path, or serve it from a server that sends it")
        return int(total)

    def _get(self, start: int, end: int) -> tuple[Any, bytes]:
        """One ranged GET of bytes ``start..end`` (inclusive), retried while transient."""
        headers = {"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"}
        probed = self.size >= 0              # after the probe, a 200 means the file changed
        if self.validator:
            headers["If-Range"] = self.validator

        def attempt() -> tuple[Any, bytes]:
            with network_errors_transient(self.timeout[1]):
                resp = self.session.get(self.url, headers=headers, timeout=self.timeout,
                                        stream=True)
                with resp:
                    if resp.status_code >= 400 or (resp.status_code == 200 and probed):
                        body = b""   # an error, or the whole (changed) file: not downloaded
                    else:
                        body = resp.content   # cut short: raises (urllib3 checks the length)
            if is_transient_status(resp.status_code):
                raise status_failure(resp)
            if resp.status_code >= 400:
                raise OSError(f"{self.url}: HTTP {resp.status_code} {resp.reason}")
            return resp, body

        return with_retries(self.url, attempt)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.size - self.pos)
        if n <= 0:
            return 0
        if self.whole is not None:
            data = self.whole[self.pos:self.pos + n]
        else:
            data = self._ranged(self.pos, self.pos + n - 1)
        view[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def _ranged(self, start: int, end: int) -> bytes:
        resp, body = self._get(start, end)
        etag = resp.headers.get("ETag")
        if resp.status_code != 206 or (self.etag and etag and etag != self.etag):
            raise HttpFileChanged(
                f"{self.url}: the file changed on the server while it was read (HTTP "
                f"{resp.status_code}, ETag {self.etag} -> {etag}); rerun to read the new "
                "version")
        sent = resp.headers.get("Content-Range", "").replace("bytes", "").strip()
        if not sent.startswith(f"{start}-"):
            raise OSError(f"{self.url}: asked for bytes {start}-{end}, the server sent "
                          f"{resp.headers.get('Content-Range')!r}")
        return body

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(f"{self.url}: seek to a negative position")
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        if not self.closed:
            self.session.close()
        super().close()


def open_http_file(url: str, buffer_size: int = 1 << 20) -> io.BufferedReader:
    """``url`` as a buffered, seekable binary file (see :class:`HttpRangeFile`)."""
    return io.BufferedReader(HttpRangeFile(url), buffer_size=buffer_size)
