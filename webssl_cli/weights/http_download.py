"""Download one file over HTTP(S) safely: resumable, verified, atomic, one process at a time.

``download_file(url, dest)`` guarantees that ``dest`` either does not exist or is a complete
file whose sha256 (hashed from the bytes received) is recorded in ``dest.sha256``:

- bytes go to ``<dest>.part``; ``<dest>.part.json`` remembers the URL and the server's
  validator (ETag or Last-Modified) so a later run resumes with ``Range: bytes=N-`` and
  ``If-Range``: a 206 continues the part, a 200 (server ignores ranges, or the remote file
  changed) restarts from zero, a 416 restarts too;
- a dropped connection or a 5xx/429 is retried with exponential backoff, at most ``retries``
  times in a row without new bytes; after that the ``.part`` is kept and the error says to rerun;
- when the server's ``X-Linked-Etag``/``ETag`` is a sha256 (or ``expected_sha256`` is given),
  the received bytes must match it, else the part is deleted and nothing is installed;
- the part is fsynced, the sidecars written, then it is renamed to ``dest``;
- everything happens under ``<dest>.lock`` (see :mod:`.locking`): a second process waits and
  then finds the finished file instead of downloading it again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, StopSignal, WebsslError
from ..atomic_io import atomic_write_bytes, fsync_dir
from .checksum import (is_sha256, read_sidecar, sidecar_path, stamp_path, verify_file,
                       write_sidecar, write_stamp)
from .locking import exclusive
from .progress import ByteProgress, make_progress

USER_AGENT = "webssl-cli (+https://github.com/facebookresearch/webssl weights)"
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_RESTARTS = 3
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def _short(exc: BaseException) -> str:
    """One readable line for a requests/urllib3 network error (they nest their causes)."""
    text = str(exc)
    for needle, short in (("Name or service not known", "cannot resolve the host name"),
                          ("Temporary failure in name resolution", "cannot resolve the host name"),
                          ("Connection refused", "connection refused"),
                          ("IncompleteRead", "the server closed the connection early"),
                          ("Connection reset", "connection reset by the server"),
                          ("timed out", "timed out")):
        if needle in text:
            return short
    return text.splitlines()[0][:200] if text else type(exc).__name__


class _Transient(Exception):
    """A failure worth retrying (dropped connection, short body, 5xx)."""


class _Restart(Exception):
    """The partial file cannot be continued; start again from byte 0."""


@dataclass
class _PartState:
    """What ``<dest>.part.json`` records about the partial download."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    total: int | None = None

    @property
    def validator(self) -> str | None:
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _meta_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def lock_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".lock")


def _clean_etag(value: str | None) -> str | None:
    if not value:
        return None
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    return v.strip('"').lower()


def remote_sha256(headers: Any) -> str | None:
    """The sha256 a server advertises (HF's X-Linked-Etag, or an ETag that is 64 hex)."""
    for name in ("X-Linked-Etag", "ETag"):
        value = _clean_etag(headers.get(name))
        if is_sha256(value):
            return value
    return None


def _load_state(dest: Path, url: str) -> _PartState | None:
    try:
        data = json.loads(_meta_path(dest).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("url") != url:
        return None
    return _PartState(url=url, etag=data.get("etag"), last_modified=data.get("last_modified"),
                      total=data.get("total"))


def _save_state(dest: Path, state: _PartState) -> None:
    atomic_write_bytes(_meta_path(dest), (json.dumps(state.__dict__) + "\n").encode())


class _Hasher:
    """sha256 of the part file, kept in step with its length (rehashes a prefix only once)."""

    def __init__(self, part: Path) -> None:
        self.part, self.h, self.upto = part, hashlib.sha256(), 0

    def sync_to(self, offset: int) -> None:
        if offset == self.upto:
            return
        self.h, self.upto = hashlib.sha256(), 0
        with open(self.part, "rb") as f:
            while self.upto < offset:
                block = f.read(min(8 << 20, offset - self.upto))
                if not block:
                    break
                self.h.update(block)
                self.upto += len(block)

    def update(self, block: bytes) -> None:
        self.h.update(block)
        self.upto += len(block)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _check_space(folder: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed > free:
        raise WebsslError(f"not enough disk space in {folder}: the download needs {needed} more "
                          f"bytes, {free} are free. Free space or pass --cache-dir DIR "
                          f"(or set WEBSSL_CACHE) to a larger disk.")


def _parse_content_range(value: str | None) -> tuple[int, int | None]:
    m = _CONTENT_RANGE.match((value or "").strip())
    if not m:
        raise _Restart(f"unusable Content-Range {value!r}")
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), total


def _attempt(session: Any, url: str, dest: Path, state: _PartState | None, hasher: _Hasher,
             bar: ByteProgress, chunk_size: int, timeout: tuple[float, float]) -> _PartState:
    """One GET: continue or (re)start the part file. Returns the state of a complete part."""
    import requests

    part = part_path(dest)
    offset = part.stat().st_size if part.exists() else 0
    if offset and state is not None and state.total is not None and offset == state.total:
        return state                     # complete part left by a run that stopped before rename
    headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if state is not None and state.validator:
            headers["If-Range"] = state.validator
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Transient(f"cannot connect: {_short(exc)}") from None
    with resp:
        code = resp.status_code
        if code == 416:
            raise _Restart("the server refused the resume range (HTTP 416)")
        if code in RETRY_STATUS:
            raise _Transient(f"HTTP {code}")
        if code == 404:
            raise WebsslError(f"{url}: not found (HTTP 404). Check the model name, or "
                              f"WEBSSL_PTH_BASE_URL if you set it.")
        if code not in (200, 206):
            raise WebsslError(f"{url}: HTTP {code} {resp.reason}; cannot download.")
        if code == 206:
            start, total = _parse_content_range(resp.headers.get("Content-Range"))
            if start != offset:
                raise _Restart(f"the server resumed at byte {start}, not {offset}")
        else:
            if offset:
                print(f"note: the server sent the whole of {dest.name} instead of the rest (it "
                      f"ignores ranges, or the file changed); restarting from byte 0",
                      file=sys.stderr, flush=True)
            offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        new_state = _PartState(url=url, etag=resp.headers.get("ETag"),
                               last_modified=resp.headers.get("Last-Modified"), total=total)
        if state is not None and state.etag and new_state.etag and state.etag != new_state.etag \
                and code == 206:
            raise _Restart("the remote file changed since the partial download")
        if total is not None:
            _check_space(dest.parent, total - offset)
        _save_state(dest, new_state)
        mode = "r+b" if part.exists() else "wb"
        with open(part, mode) as f:
            f.truncate(offset)
            f.seek(offset)
            hasher.sync_to(offset)
            bar.start(total, offset)
            try:
                for block in resp.iter_content(chunk_size=chunk_size):
                    if block:
                        f.write(block)
                        hasher.update(block)
                        bar.advance(len(block))
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                raise _Transient(f"connection dropped: {_short(exc)}") from None
            finally:
                f.flush()
                os.fsync(f.fileno())
            size = f.tell()
    if total is not None and size < total:
        raise _Transient(f"connection closed after {size} of {total} bytes")
    if total is not None and size > total:
        raise _Restart(f"received {size} bytes, more than the announced {total}")
    new_state.total = size
    _save_state(dest, new_state)
    return new_state


def _discard_part(dest: Path) -> None:
    for p in (part_path(dest), _meta_path(dest)):
        p.unlink(missing_ok=True)


def _fetch(url: str, dest: Path, expected_sha256: str | None, progress: bool, chunk_size: int,
           retries: int, backoff_s: float, timeout: tuple[float, float]) -> str:
    import requests

    part = part_path(dest)
    state = _load_state(dest, url)
    if state is None and part.exists():
        _discard_part(dest)              # a part of another URL, or of unknown origin
    hasher = _Hasher(part)
    bar = make_progress(dest.name, progress)
    failures = restarts = 0
    ok = False
    try:
        with requests.Session() as session:
            while True:
                before = part.stat().st_size if part.exists() else 0
                try:
                    state = _attempt(session, url, dest, state, hasher, bar, chunk_size, timeout)
                    break
                except _Restart as exc:
                    restarts += 1
                    if restarts > MAX_RESTARTS:
                        raise WebsslError(f"{url}: download restarted {MAX_RESTARTS} times "
                                          f"({exc}); giving up.") from None
                    print(f"note: {exc}; restarting {dest.name} from byte 0", file=sys.stderr)
                    _discard_part(dest)
                    state = None
                except _Transient as exc:
                    state = _load_state(dest, url)     # the validator of this attempt, if any
                    after = part.stat().st_size if part.exists() else 0
                    failures = 1 if after > before else failures + 1
                    if failures > retries:
                        kept = (f"The {after} bytes received so far are kept in {part}; run the "
                                f"same command again to resume." if after else
                                "Check the network (or WEBSSL_PTH_BASE_URL) and run it again.")
                        raise WebsslError(f"downloading {url} failed {failures} time(s) in a row "
                                          f"({exc}). {kept}") from None
                    wait = min(backoff_s * 2 ** (failures - 1), 60.0)
                    print(f"warning: {dest.name}: {exc}; retrying in {wait:.1f}s",
                          file=sys.stderr, flush=True)
                    time.sleep(wait)
        hasher.sync_to(part.stat().st_size)
        ok = True
    finally:
        bar.close(ok)
    actual = hasher.hexdigest()
    for label, want in (("expected", expected_sha256), ("the server's ETag", _state_sha(state))):
        if want and want.lower() != actual:
            _discard_part(dest)
            raise CheckpointError(
                f"{url}: checksum mismatch: received bytes hash to sha256 {actual}, {label} is "
                f"{want.lower()}. The download was discarded (not installed as {dest}); run the "
                f"command again, and if it repeats the server copy is damaged.")
    return actual


def _state_sha(state: _PartState | None) -> str | None:
    value = _clean_etag(state.etag) if state is not None else None
    return value if is_sha256(value) else None


def _install(dest: Path, sha: str) -> None:
    part = part_path(dest)
    write_sidecar(dest, sha)
    write_stamp(dest, sha, stat_of=part)
    os.replace(part, dest)
    fsync_dir(dest.parent)
    _meta_path(dest).unlink(missing_ok=True)


def interrupted_message(part: Path) -> str:
    """What a stopped download says: rerunning resumes it, from the kept partial file."""
    size = part.stat().st_size if part.exists() else 0
    kept = (f"partial file kept: {part}, {size} bytes" if size else
            "nothing had been received yet")
    return f"interrupted; rerun the same command to resume the download ({kept})"


def remove_cached(dest: Path) -> None:
    """Delete a cached file and its sidecars (not the lock)."""
    for p in (dest, sidecar_path(dest), stamp_path(dest)):
        p.unlink(missing_ok=True)


def download_file(url: str, dest: Path, *, expected_sha256: str | None = None,
                  progress: bool = True, chunk_size: int = 1 << 18, retries: int = 5,
                  backoff_s: float = 1.0, timeout: tuple[float, float] = (30.0, 120.0)) -> Path:
    """Download ``url`` to ``dest`` (see the module docstring); return ``dest``.

    If ``dest`` already exists and agrees with its sidecar (and with ``expected_sha256``), nothing
    is downloaded. A file that fails that check is deleted and downloaded again.
    """
    dest = Path(dest)
    with exclusive(lock_path(dest), dest.name):
        if dest.exists():
            try:
                verify_file(dest)
                recorded = read_sidecar(dest)
                if expected_sha256 is None or recorded == expected_sha256.lower():
                    return dest
                print(f"note: {dest} has sha256 {recorded}, expected {expected_sha256}; "
                      f"downloading it again", file=sys.stderr)
            except CheckpointError as exc:
                print(f"warning: {exc}", file=sys.stderr)
                print(f"note: deleting {dest} and downloading it again", file=sys.stderr)
            remove_cached(dest)
        try:
            sha = _fetch(url, dest, expected_sha256, progress, chunk_size, retries, backoff_s,
                         timeout)
            _install(dest, sha)
        except WebsslError:
            raise
        except (KeyboardInterrupt, StopSignal) as exc:   # Ctrl-C, SIGTERM: the part is kept
            raise type(exc)(interrupted_message(part_path(dest))) from None
        except OSError as exc:
            import requests
            if isinstance(exc, requests.RequestException):
                raise WebsslError(f"{url}: {_short(exc)}; cannot download.") from None
            raise WebsslError(f"cannot write {dest} (or its .part): {exc.strerror or exc}. "
                              f"Free space or make {dest.parent} writable, or pass --cache-dir "
                              f"DIR / set WEBSSL_CACHE.") from None
    return dest
