"""One downloader per file: an inter-process lock on ``<dest>.lock`` that says when it waits.

Many ranks (one node, or many nodes over a shared filesystem) may start at once; the first
takes the lock and downloads, the others print that they wait and block until it is released,
then find the finished file. The lock is ``filelock.FileLock`` (``flock``); on a filesystem that
does not support it, filelock falls back to a lock file that exists while held.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import WebsslError


@contextlib.contextmanager
def exclusive(lock_path: Path, what: str) -> Iterator[None]:
    """Hold the lock at ``lock_path``; if another process holds it, say so and wait."""
    from filelock import FileLock, Timeout

    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"waiting for another process that is downloading {what} (lock {lock_path})",
                  file=sys.stderr, flush=True)
            lock.acquire()
    except OSError as exc:
        raise WebsslError(f"cannot take the download lock {lock_path}: "
                          f"{exc.strerror or exc}. Downloading needs a writable cache folder: "
                          f"pass --cache-dir DIR or set WEBSSL_CACHE / HF_HOME.") from None
    try:
        yield
    finally:
        lock.release()
