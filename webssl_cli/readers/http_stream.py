"""``http(s)://`` inputs: timeouts, one file's bytes, and shard streams that survive
transient failures (retries of the open, ``Range`` resumes mid-body; see ``retry.py``)."""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator

from ..errors import UsageError
from .errors import StreamError
from .retry import (RETRIES, Transient, TransientNetworkError, describe, is_transient_status,
                    network_errors_transient, network_failure, status_failure, wait_before,
                    with_retries)

HTTP_CONNECT_TIMEOUT = 10.0
HTTP_READ_TIMEOUT = 120.0         # default of $WEBSSL_HTTP_TIMEOUT
HTTP_TIMEOUT_ENV = "WEBSSL_HTTP_TIMEOUT"
MAX_RESUMES = 10                  # Range requests of one HTTP shard, in all


def http_timeout() -> tuple[float, float]:
    """(connect, read) timeouts of HTTP requests. The read timeout is how long a response may
    send nothing (not the whole transfer): ``$WEBSSL_HTTP_TIMEOUT`` seconds, default 120, for
    servers that are slow to start answering."""
    raw = os.environ.get(HTTP_TIMEOUT_ENV, "").strip()
    if not raw:
        return HTTP_CONNECT_TIMEOUT, HTTP_READ_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{HTTP_TIMEOUT_ENV}={raw!r} is not a positive number of seconds; set "
                         f"it to how long an HTTP input may send no data (e.g. 300; default "
                         f"{HTTP_READ_TIMEOUT:g}) or unset it")
    return HTTP_CONNECT_TIMEOUT, value


def http_session() -> Any:
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = "webssl-cli"
    return session


def http_bytes(url: str, session: Any, retries: int | None = None) -> bytes:
    """The body of ``url``, retrying transient failures (``retries`` times, default
    :data:`~.retry.RETRIES`; raises :class:`~.retry.TransientNetworkError` when they persist,
    ``requests.HTTPError`` for a final 4xx answer)."""
    timeout = http_timeout()

    def attempt() -> bytes:
        with network_errors_transient(timeout[1]), session.get(url, timeout=timeout) as resp:
            if is_transient_status(resp.status_code):
                raise status_failure(resp)
            resp.raise_for_status()
            return resp.content

    return with_retries(url, attempt, retries)


@contextmanager
def open_http(source: str) -> Iterator[BinaryIO]:
    stream = _HttpStream(source, http_session(), http_timeout())
    try:
        stream.open()
        yield stream   # type: ignore[misc]
    finally:
        stream.close()


class _HttpStream:
    """The body of one HTTP(S) shard as a read-only stream that survives transient failures:
    opening is retried (connection errors, timeouts, 408/429/5xx), and a connection that
    breaks mid-body is resumed with ``Range: bytes=N-`` when the server said it can (an
    ``Accept-Ranges: bytes`` or an ``ETag``), checking that the answer is a 206 starting at
    byte N of the same file (``If-Range`` with its ETag/Last-Modified, compared again)."""

    def __init__(self, url: str, session: Any, timeout: tuple[float, float]) -> None:
        self.url, self.session, self.timeout = url, session, timeout
        self.resp: Any = None
        self.pos = 0                  # bytes of the body handed out so far
        self.resumes = 0
        self.etag: str | None = None
        self.validator: str | None = None
        self.ranges = False

    def open(self) -> None:
        """The first GET, retried while it fails transiently (raises :class:`StreamError`)."""
        try:
            self.resp = with_retries(self.url, lambda: self._get(None))
        except TransientNetworkError as exc:
            raise StreamError(exc.summary) from None
        headers = self.resp.headers
        self.etag = headers.get("ETag")
        strong = self.etag if self.etag and not self.etag.startswith("W/") else None
        self.validator = strong or headers.get("Last-Modified")   # If-Range needs a strong one
        encoded = headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        self.ranges = not encoded and (
            headers.get("Accept-Ranges", "").lower() == "bytes" or bool(self.etag))

    def _get(self, offset: int | None) -> Any:
        """One GET (from ``offset`` when resuming); raises :class:`Transient` or StreamError."""
        headers = {"Accept-Encoding": "identity"}
        if offset is not None:
            headers["Range"] = f"bytes={offset}-"
            if self.validator:
                headers["If-Range"] = self.validator
        try:
            with network_errors_transient(self.timeout[1]):
                resp = self.session.get(self.url, stream=True, timeout=self.timeout,
                                        headers=headers)
        except Transient:
            raise
        except Exception as exc:   # noqa: BLE001 - an unusable URL, TLS, ...
            raise StreamError(f"cannot connect: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            resp.close()
            if is_transient_status(resp.status_code):
                raise status_failure(resp)
            raise StreamError(f"HTTP {resp.status_code} {resp.reason}")
        resp.raw.decode_content = True
        return resp

    def read(self, size: int = -1) -> bytes:
        while True:
            try:
                data = self.resp.raw.read(None if size is None or size < 0 else size)
            except Exception as exc:   # noqa: BLE001 - urllib3/socket errors
                if not network_failure(exc):
                    raise
                self._resume(describe(exc, self.timeout[1]))
                continue
            self.pos += len(data)
            return data

    def _resume(self, what: str) -> None:
        """Reconnect at byte ``pos`` after the connection broke (``what``), or raise
        :class:`StreamError` saying why the shard cannot be continued."""
        broke = f"{what} after {self.pos} bytes"
        if not self.ranges:
            raise StreamError(f"{broke}; cannot resume: the server sent neither "
                              "Accept-Ranges: bytes nor an ETag (rerun to read it again)")
        failures = 0
        while True:
            self.resumes += 1
            if self.resumes > MAX_RESUMES:
                raise StreamError(f"{broke}; gave up after {MAX_RESUMES} resumed requests "
                                  "(unreliable server or network: check it and rerun)")
            self.resp.close()
            try:
                self.resp = self._get(self.pos)
            except StreamError as exc:
                raise StreamError(f"{broke}; resuming at byte {self.pos} failed: {exc}") from None
            except Transient as exc:
                failures += 1
                if failures > RETRIES:
                    raise StreamError(f"{broke}; resuming failed {failures} times "
                                      f"({exc.what}): check the server or network and rerun"
                                      ) from None
                time.sleep(wait_before(failures, exc.retry_after, 0.0))
                continue
            self._check_resumed()
            return

    def _check_resumed(self) -> None:
        """The resumed answer must continue the same file at ``pos``."""
        resp, broke = self.resp, f"resuming at byte {self.pos}"
        if resp.status_code != 206:
            raise StreamError(f"{broke}: the server answered HTTP {resp.status_code} instead of "
                              "206 Partial Content (the file changed, or ranges are not "
                              "supported); rerun to read it again")
        start = resp.headers.get("Content-Range", "").replace("bytes", "").strip().split("-")[0]
        if start != str(self.pos):
            raise StreamError(f"{broke}: the server sent Content-Range "
                              f"{resp.headers.get('Content-Range')!r}; rerun to read it again")
        etag = resp.headers.get("ETag")
        if self.etag and etag and etag != self.etag:
            raise StreamError(f"{broke}: the file changed on the server (ETag {self.etag} -> "
                              f"{etag}); rerun to read the new version")

    def close(self) -> None:
        if self.resp is not None:
            self.resp.close()
        self.session.close()
