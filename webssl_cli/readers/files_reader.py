"""``kind="files"`` units -> RawSamples: one image file (local path, s3:// or http(s):// URL) each.

Keys: ``unit.source`` is the key root and ends with ``/``; an item under it is keyed by its path
relative to it, any other item (a URL from a list file, an absolute path outside the root) by
itself. Bytes of a name that are not UTF-8 are escaped as ``\\xNN`` in the key and the source
(:func:`~webssl_cli.units.escape_undecodable`; the file is read from its real path). A file
that cannot be read is yielded with ``data=None`` and the exception's type and
message (FileNotFoundError, HTTPError 404, ...).

Transient network failures (refused or dropped connections, timeouts, HTTP 408/429/5xx) are
retried first (:mod:`.retry`); one that persists becomes a ``TransientNetworkError`` sample.
But when no sample of the part could be read and some failed that way, the server is down
rather than the files bad: the part raises :class:`ReadError`, so the unit is not committed
(its failures would otherwise be final) and a rerun reads it again. The part gives up early,
after :data:`GIVE_UP_AFTER` such failures in a row on one host with nothing read yet, instead
of waiting out the retries of every URL of a dead server. And once a host has failed
transiently after all retries, later URLs on it get one attempt only: a URL list with many
dead hosts (common in web-scale lists) costs one request per dead URL, not its backoff.
Likewise a missing file that a folder scan found, whose folder is now gone or empty (unmounted
mid-run), fails the unit, which a rerun redoes, instead of writing off its files one by one (a
list's missing file stays a ledger row: lists are not checked at planning).
"""
from __future__ import annotations

import os
from typing import Any, Iterator
from urllib.parse import urlsplit

from ..config import InputConfig
from ..units import RawSample, Unit, escape_undecodable
from .errors import ReadError
from .keys import KeyDeduper
from .retry import TransientNetworkError
from .storage import http_session, http_timeout, is_http, read_bytes

GIVE_UP_AFTER = 3


def file_key(unit: Unit, item: str) -> str:
    """The key of ``item`` as named (before :func:`file_keys` escapes undecodable bytes)."""
    root = unit.source
    if root.endswith("/") and item.startswith(root) and len(item) > len(root):
        return item[len(root):]
    return item


def file_keys(unit: Unit) -> list[str]:
    """The keys of every item of ``unit``, in order (every part computes all of them, so a
    key does not depend on how the unit is split).

    A name whose bytes are not UTF-8 has them escaped as ``\\xNN`` (:func:`escape_undecodable`).
    Should its escaped key equal another item's key (a file literally named ``caf\\xe9.jpg``
    beside the undecodable ``caf\\xe9.jpg``), the escaped one gets ``#2``, ``#3``...: the keys
    of names that need no escape never change.
    """
    raw = [file_key(unit, item) for item in unit.items]
    escaped = [escape_undecodable(k) for k in raw]
    if escaped == raw:
        return raw
    unique = KeyDeduper(reserved={k for k, e in zip(raw, escaped) if k == e})
    return [k if k == e else unique.made(e) for k, e in zip(raw, escaped)]


class _DownCheck:
    """Counts a part's reads to tell a dead server (nothing read, network failures) from bad
    files (final failures, or some reads that worked)."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self.read = 0
        self.transient: list[TransientNetworkError] = []
        self.streak_host: str | None = None
        self.streak = 0
        self.down_hosts: set[str] = set()   # failed after all retries: no retries any more

    def retries(self, item: str) -> int | None:
        return 0 if urlsplit(item).netloc in self.down_hosts else None

    def ok(self) -> None:
        self.read += 1

    def failed(self, exc: Exception, item: str) -> None:
        """Record a failed sample; raise ReadError once a dead server is plain, or when a
        file found by a folder scan is missing and its folder is now gone or empty
        (unmounted while the run read it: its files were there at planning)."""
        folder = os.path.dirname(item)
        if isinstance(exc, FileNotFoundError) and self.unit.scanned and _gone_or_empty(folder):
            raise ReadError(self.unit, f"the input folder {folder} is gone or empty (unmounted "
                                       "or removed while the run read it): the unit is not "
                                       "written; rerun when the folder is back")
        if not isinstance(exc, TransientNetworkError):
            self.streak = 0
            return
        self.transient.append(exc)
        host = urlsplit(exc.url).netloc
        self.down_hosts.add(host)
        self.streak = self.streak + 1 if host == self.streak_host else 1
        self.streak_host = host
        if self.read == 0 and self.streak >= GIVE_UP_AFTER:
            raise self.error(f"the first {self.streak} URLs on {host} failed with network "
                             "errors; the rest of the unit was not tried")

    def finish(self) -> None:
        """End of the part: raise ReadError when nothing was read and the network failed."""
        if self.read == 0 and self.transient:
            raise self.error(f"{len(self.transient)} of its URLs failed with network errors")

    def error(self, what: str) -> ReadError:
        first = self.transient[0]
        return ReadError(self.unit, f"no image could be read: {what}; first: {first}")


def iter_file_samples(unit: Unit, cfg: InputConfig, part: int,
                      n_parts: int) -> Iterator[RawSample]:
    session: Any = None
    check = _DownCheck(unit)
    if any(is_http(item) for item in unit.items):
        http_timeout()   # a bad $WEBSSL_HTTP_TIMEOUT fails the unit, not each sample
    keys = file_keys(unit)
    try:
        for index, item in enumerate(unit.items):
            if index % n_parts != part:
                continue
            key, source = keys[index], escape_undecodable(item)
            try:
                if is_http(item) and session is None:
                    session = http_session()
                data = read_bytes(item, cfg, session, check.retries(item))
            except Exception as exc:   # noqa: BLE001 - every failure becomes a ledger row
                yield RawSample(index=index, key=key, source=source, data=None,
                                error=str(exc) or type(exc).__name__,
                                error_type=type(exc).__name__)
                check.failed(exc, item)
                continue
            check.ok()
            yield RawSample(index=index, key=key, source=source, data=data)
        check.finish()
    finally:
        if session is not None:
            session.close()


def _gone_or_empty(folder: str) -> bool:
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is None
    except FileNotFoundError:
        return True
    except OSError:
        return False
