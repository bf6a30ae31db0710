"""Retrying transient network failures of HTTP inputs (image URLs, tar shards, planning).

A failure is *transient* when repeating the same request may well succeed: the connection
could not be made or broke, no data came in time, or the server answered 408, 429 or 5xx.
Those are retried a few times (:data:`RETRIES`) with exponential backoff and jitter (so that
many workers hitting one recovering server do not come back in lockstep), honouring a
``Retry-After`` header up to :data:`RETRY_AFTER_CAP_S`; the waits of one request add up to at
most :data:`MAX_TOTAL_WAIT_S`. Any other 4xx (404, 403, ...) is the server's final answer and is
never retried.

``WEBSSL_HTTP_BACKOFF_S`` (internal, for tests) replaces the first backoff wait :data:`BACKOFF_S`.
"""
from __future__ import annotations

import email.utils
from contextlib import contextmanager
from http.client import IncompleteRead as HttpIncompleteRead
import os
import random
import re
import socket
import time
from typing import Any, Callable, Iterator, TypeVar

from ..errors import WebsslError

T = TypeVar("T")

RETRIES = 3                 # attempts after the first
BACKOFF_S = 1.0             # first wait; doubles each retry (1, 2, 4 s before jitter)
RETRY_AFTER_CAP_S = 5.0     # a longer Retry-After is shortened to this
MAX_TOTAL_WAIT_S = 10.0     # the waits of one request never add up to more
BACKOFF_ENV = "WEBSSL_HTTP_BACKOFF_S"


class Transient(Exception):
    """One attempt failed in a way that repeating it may fix; ``what`` says how (no URL)."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after


class TransientNetworkError(Exception):
    """Every attempt at ``url`` failed transiently: the server or network is down for now, so
    the input is not at fault and a later rerun may well succeed."""

    def __init__(self, url: str, what: str, attempts: int) -> None:
        self.url, self.what, self.attempts = url, what, attempts
        tries = f"{attempts} attempt{'' if attempts == 1 else 's'}"
        self.summary = (f"{what} ({tries}); the server or network seems down: check it and "
                        "rerun")          # without the URL, for messages that name it already
        super().__init__(f"{url}: {self.summary}")


class NetworkUnavailable(WebsslError):
    """A remote input that could not be reached at planning time for a transient reason
    (exit 1: a runtime failure, not a wrong input)."""


def is_transient_status(code: int) -> bool:
    """408/429 and every 5xx may go away by themselves; other 4xx are final answers."""
    return code in (408, 429) or 500 <= code <= 599


def status_failure(resp: Any) -> Transient:
    """The :class:`Transient` for a retryable HTTP answer, with its Retry-After if any."""
    return Transient(f"HTTP {resp.status_code} {resp.reason or ''}".rstrip(),
                     retry_after_s(resp.headers.get("Retry-After")))


def retry_after_s(value: str | None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_base() -> float:
    """The first backoff wait: :data:`BACKOFF_S`, or ``$WEBSSL_HTTP_BACKOFF_S`` (tests)."""
    raw = os.environ.get(BACKOFF_ENV, "").strip()
    try:
        value = float(raw) if raw else BACKOFF_S
    except ValueError:
        return BACKOFF_S
    return value if 0 <= value < 3600 else BACKOFF_S


def wait_before(retry: int, retry_after: float | None, waited: float) -> float:
    """Seconds to sleep before retry number ``retry`` (1-based): exponential with jitter, at
    least the server's Retry-After (capped), never past :data:`MAX_TOTAL_WAIT_S` in all."""
    base = backoff_base() * 2 ** (retry - 1)
    wait = base * (0.5 + random.random() / 2)
    if retry_after is not None:
        wait = max(wait, min(retry_after, RETRY_AFTER_CAP_S))
    return max(0.0, min(wait, MAX_TOTAL_WAIT_S - waited))


def with_retries(url: str, attempt: Callable[[], T], retries: int | None = None) -> T:
    """``attempt()``, repeated while it raises :class:`Transient` (at most ``retries`` more
    times); raises :class:`TransientNetworkError` naming ``url`` when every attempt failed.
    Other exceptions pass through at once: they are final."""
    retries = RETRIES if retries is None else retries
    waited = 0.0
    for n in range(retries + 1):
        try:
            return attempt()
        except Transient as exc:
            if n == retries:
                raise TransientNetworkError(url, exc.what, n + 1) from None
            wait = wait_before(n + 1, exc.retry_after, waited)
            waited += wait
            time.sleep(wait)
    raise AssertionError("unreachable")


@contextmanager
def network_errors_transient(read_timeout: float) -> Iterator[None]:
    """Inside, a network failure (:func:`network_failure`) becomes :class:`Transient` with
    its account (:func:`describe`); any other exception passes through unchanged."""
    try:
        yield
    except Transient:
        raise
    except Exception as exc:   # noqa: BLE001 - requests/urllib3/socket errors
        if network_failure(exc):
            raise Transient(describe(exc, read_timeout)) from None
        raise


# --- what went wrong, in words -----------------------------------------------------------

def network_failure(exc: BaseException) -> bool:
    """True for the exceptions of a connection that could not be made, broke or went silent
    (requests, urllib3 and socket errors), whatever library raised them."""
    import requests
    import urllib3.exceptions as u3

    kinds = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
             u3.ProtocolError, u3.TimeoutError, u3.NewConnectionError, u3.IncompleteRead,
             HttpIncompleteRead,
             ConnectionError, socket.timeout, TimeoutError)
    return isinstance(exc, kinds)


def describe(exc: BaseException, read_timeout: float) -> str:
    """A short account of a network failure: "no data for 120 s" for an idle read, "cannot
    connect: [Errno 111] Connection refused", "connection broken: ..." (no object reprs)."""
    import requests
    import urllib3.exceptions as u3

    incomplete = (u3.IncompleteRead, HttpIncompleteRead)
    if _is_read_timeout(exc):
        return (f"no data for {read_timeout:g} s (the server stalled; WEBSSL_HTTP_TIMEOUT sets "
                "how long to wait)")
    if isinstance(exc, requests.ConnectTimeout):
        return "cannot connect: no answer to the connection request in time"
    if any(isinstance(e, incomplete) for e in _chain(exc)):
        return "connection broken: it closed before the end of the body"
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] [^'\"()]+", text)
    reason = errno.group(0).strip() if errno else _tail(text)
    if isinstance(exc, requests.ConnectionError) and not _broken(exc):
        return f"cannot connect: {reason}"
    return f"connection broken: {reason}"


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, its first arguments that are exceptions and its causes, a few levels deep."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 12:
        e = todo.pop(0)
        if e in seen:
            continue
        seen.append(e)
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    return seen


def _is_read_timeout(exc: BaseException) -> bool:
    """An idle read (data stopped coming), not a connection that timed out being made."""
    import requests
    import urllib3.exceptions as u3

    chain = _chain(exc)
    if any(isinstance(e, (requests.ConnectTimeout, u3.ConnectTimeoutError)) for e in chain):
        return False
    return any(isinstance(e, (requests.ReadTimeout, u3.ReadTimeoutError, socket.timeout))
               for e in chain)


def _broken(exc: BaseException) -> bool:
    """A connection that was made and then broke (reset, cut short), not one never made."""
    import urllib3.exceptions as u3

    return any(isinstance(e, (u3.ProtocolError, u3.IncompleteRead, ConnectionResetError))
               and not isinstance(e, u3.NewConnectionError) for e in _chain(exc))


def _tail(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[-limit:]
