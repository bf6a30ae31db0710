"""Attempt-unique staging of a unit's files until the unit is committed.

``write_unit``/``write_failures`` never write at a final name: each call writes into its
own folder ``<manifest>/staging/<unit>.<host>-<pid>-<start>-<machine>-<random>/``
mirroring the final relative paths (``liveness.process_tag`` for the middle part). Only the
commit winner renames its staged files into place, so two ranks that computed the same unit
can never overwrite each other's outputs. A folder whose writer is known to have exited (same
machine, PID gone) is swept at once; any other only when untouched for an hour.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..atomic_io import fsync_dir, fsync_file, prune_empty_dirs, remove_quietly, sha256_file
from .layout import OutputLayout
from .liveness import process_tag, tag_is_gone
from .records import FileInfo

STALE_STAGING_SECONDS = 3600.0   # untouched this long and uncommitted: left by a dead process


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40]


def new_attempt_dir(layout: OutputLayout, unit_id: str) -> Path:
    """A fresh staging folder for one write of one unit."""
    attempt = f"{_safe(socket.gethostname())}-{process_tag()}-{secrets.token_hex(4)}"
    path = layout.staging_dir / f"{unit_id}.{attempt}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def stage_file(layout: OutputLayout, attempt_dir: Path, final: Path,
               write: Callable[[Path], None]) -> FileInfo:
    """Call ``write(staged_path)``, fsync the result and describe it for the commit."""
    rel = layout.rel(final)
    staged = attempt_dir / rel
    staged.parent.mkdir(parents=True, exist_ok=True)
    write(staged)
    fsync_file(staged)
    fsync_dir(staged.parent)
    size, sha = sha256_file(staged)
    return FileInfo(path=rel, bytes=size, sha256=sha, staged=layout.rel(staged))


def discard_staged(layout: OutputLayout, files: Iterable[FileInfo | None]) -> None:
    """Delete staged files that will not be committed (lost race, failed unit)."""
    for info in files:
        if info is None or not info.staged:
            continue
        staged = layout.abs(info.staged)
        remove_quietly(staged)
        prune_empty_dirs(staged.parent, layout.staging_dir)


def attempt_dir_of(layout: OutputLayout, staged_rel: str) -> str:
    """Name of the attempt folder a staged path lives in."""
    return Path(staged_rel).relative_to(layout.rel(layout.staging_dir)).parts[0]


def sweep_staging(layout: OutputLayout, keep: set[str],
                  older_than: float = STALE_STAGING_SECONDS) -> list[str]:
    """Remove attempt folders not in ``keep`` whose writer is known to have exited, or whose
    newest file is older than ``older_than`` seconds (left by killed processes on other
    machines). Returns the removed folder names."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(layout.staging_dir))
    except FileNotFoundError:
        return removed
    limit = time.time() - older_than
    for entry in entries:
        if entry.name in keep or not entry.is_dir(follow_symlinks=False):
            continue
        if _writer_gone(entry.name) or _newest_mtime(Path(entry.path)) < limit:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
    return removed


def _writer_gone(name: str) -> bool:
    """``<unit>.<host>-<pid>-<start>-<machine>-<random>``: is that writer known to be gone?
    (Folders of older versions, ``<host>-<pid>-<random>``, never are: age decides.)"""
    parts = name.partition(".")[2].rsplit("-", 4)
    return len(parts) == 5 and tag_is_gone("-".join(parts[1:4]))


def _newest_mtime(path: Path) -> float:
    newest = path.stat().st_mtime
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
            except FileNotFoundError:
                continue
    return newest
