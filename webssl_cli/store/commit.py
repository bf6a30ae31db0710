"""Committing a finished unit exactly once, even when ranks race or die mid-commit.

Protocol (also in docs/output-format.md):

1. ``write_unit``/``write_failures`` stage every file under an attempt-unique name and
   fsync it (see staging.py). Nothing is visible at a final name yet.
2. ``commit_unit`` exclusively creates ``<manifest>/commits/<unit>.json``: the commit
   intent, holding the would-be done-record and the list of staged -> final moves.
   Creating it is the commit decision: exactly one attempt per unit ever succeeds; the
   others get False and delete their own staged files.
3. The winner renames its staged files to their final names (fsyncing the folders) and
   exclusively creates the done-record ``<manifest>/done/<unit>.json`` last.

If the winner dies between 2 and 3, the intent still lists everything needed: any
process calling ``done_units`` (every run start) or ``ClaimStore.claim_next`` finishes
the commit ("roll forward"). Rolling forward is idempotent and safe to run concurrently
with a live winner: a move whose staged file is gone is checked at its final name.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..errors import WebsslError
from ..atomic_io import exclusive_create, fsync_dir, prune_empty_dirs, read_json_file
from .layout import OutputLayout
from .liveness import this_process
from .records import DoneRecord, dumps
from .staging import attempt_dir_of, discard_staged, sweep_staging
from .unit_failures import clear_unit_failure


def commit_unit(layout: OutputLayout, record: DoneRecord) -> bool:
    """Publish the unit's staged files and write its done-record last.

    Returns False (and deletes this attempt's staged files) if another attempt
    committed the unit first; the caller's work is then discarded.
    """
    files = record.all_files()
    unstaged = [f.path for f in files if not f.staged]
    if unstaged:
        raise ValueError(f"commit_unit needs the FileInfo returned by write_unit/write_failures "
                         f"(staged files); these were not staged: {unstaged}")
    if layout.done_path(record.unit_id).exists():
        discard_staged(layout, files)
        return False
    intent = {"record": record.to_dict(),
              "moves": [{"staged": f.staged, "path": f.path, "bytes": f.bytes} for f in files],
              "process": this_process()}
    if not exclusive_create(layout.commit_path(record.unit_id), dumps(intent)):
        existing = read_intent(layout, record.unit_id)
        if existing is None or existing.get("moves") != intent["moves"]:
            discard_staged(layout, files)
            return False          # another attempt owns the commit (same attempt: retry below)
    roll_forward(layout, intent)
    return True


def read_intent(layout: OutputLayout, unit_id: str) -> dict[str, Any] | None:
    path = layout.commit_path(unit_id)
    try:
        return read_json_file(path)
    except ValueError as exc:
        raise WebsslError(f"commit intent {path} is unreadable ({exc}); delete it and the "
                          f"unit's data files to redo unit {unit_id}") from None


def roll_forward(layout: OutputLayout, intent: dict[str, Any]) -> DoneRecord:
    """Move the intent's staged files into place and write its done-record (idempotent)."""
    record = DoneRecord.from_dict(intent["record"])
    dirs: set[Path] = set()
    for move in intent["moves"]:
        staged, final = layout.abs(move["staged"]), layout.abs(move["path"])
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staged, final)
        except FileNotFoundError:
            _check_already_moved(layout, record.unit_id, staged, final, int(move["bytes"]))
        dirs.add(final.parent)
    for d in dirs:
        fsync_dir(d)
    exclusive_create(layout.done_path(record.unit_id), dumps(record.to_dict()))
    clear_unit_failure(layout, record.unit_id)      # failed earlier (another run or rank)
    for move in intent["moves"]:
        prune_empty_dirs(layout.abs(move["staged"]).parent, layout.staging_dir)
    return record


def _check_already_moved(layout: OutputLayout, unit_id: str, staged: Path, final: Path,
                         size: int) -> None:
    try:
        actual = final.stat().st_size
    except FileNotFoundError:
        actual = -1
    if actual != size:
        raise WebsslError(
            f"cannot finish the commit of unit {unit_id}: staged file {staged} is gone and "
            f"{final} is {'missing' if actual < 0 else f'{actual} bytes, not {size}'}. The "
            f"output folder was changed by something else; delete {layout.commit_path(unit_id)} "
            "and rerun to redo the unit.")


# done-records never change once written: parse each file once per process (keyed by
# inode too: a unit reopened for a redo gets a new done-record file)
_DONE_CACHE: dict[str, dict[str, tuple[int, DoneRecord]]] = {}
_LAST_SWEEP: dict[str, float] = {}
SWEEP_EVERY_SECONDS = 600.0


def read_done_records(layout: OutputLayout) -> dict[str, DoneRecord]:
    """All done-records (unit id -> record), read-only (no recovery).

    Cheap to call often: one directory listing; records already seen are not re-read.
    """
    key = os.path.abspath(layout.done_dir)
    try:
        entries = list(os.scandir(layout.done_dir))
    except (FileNotFoundError, NotADirectoryError):
        _DONE_CACHE.pop(key, None)
        return {}
    cache = _DONE_CACHE.get(key, {})
    seen: dict[str, tuple[int, DoneRecord]] = {}
    for entry in entries:
        name = entry.name
        if not name.endswith(".json") or name.startswith("."):
            continue
        unit_id = name[:-5]
        cached = cache.get(unit_id)
        if cached is not None and cached[0] == entry.inode():
            seen[unit_id] = cached
            continue
        rec = _parse_done(layout, layout.done_dir / name)
        if rec is not None:
            seen[unit_id] = (entry.inode(), rec)
    _DONE_CACHE[key] = seen
    return {uid: rec for uid, (_ino, rec) in seen.items()}


def forget_cached_records() -> None:
    """Drop the per-process done-record cache (after a wipe)."""
    _DONE_CACHE.clear()


def _parse_done(layout: OutputLayout, path: Path) -> DoneRecord | None:
    try:
        data = read_json_file(path)
        return None if data is None else DoneRecord.from_dict(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise WebsslError(f"done-record {path} is unreadable ({exc}); delete it (and "
                          f"{layout.commit_path(path.stem)}) to redo that unit") from None


def intent_ids(layout: OutputLayout) -> set[str]:
    try:
        return {n[:-5] for n in os.listdir(layout.commits_dir)
                if n.endswith(".json") and not n.startswith(".")}
    except FileNotFoundError:
        return set()


def pending_commits(layout: OutputLayout, done: dict[str, DoneRecord] | None = None) -> list[str]:
    """Units with a commit intent but no done-record (a commit in flight or interrupted)."""
    done = read_done_records(layout) if done is None else done
    return sorted(intent_ids(layout) - set(done))


def done_units(layout: OutputLayout, *, recover: bool = True) -> dict[str, DoneRecord]:
    """unit id -> done-record. With ``recover`` (default), first finish interrupted
    commits, and (at most every 10 minutes per process) sweep staging folders that
    killed processes left behind."""
    done = read_done_records(layout)
    if not recover:
        return done
    for unit_id in pending_commits(layout, done):
        intent = read_intent(layout, unit_id)
        if intent is not None:
            done[unit_id] = roll_forward(layout, intent)
    now = time.monotonic()
    key = os.path.abspath(layout.staging_dir)
    if now - _LAST_SWEEP.get(key, -SWEEP_EVERY_SECONDS) >= SWEEP_EVERY_SECONDS:
        _LAST_SWEEP[key] = now
        keep = set()
        for unit_id in pending_commits(layout, done):      # in flight: keep their staging
            intent = read_intent(layout, unit_id) or {"moves": []}
            keep |= {attempt_dir_of(layout, m["staged"]) for m in intent["moves"]}
        sweep_staging(layout, keep)
    return done


def committed_files(layout: OutputLayout) -> list[str]:
    """Relative paths of every file any commit of this folder published (or is publishing)."""
    paths: set[str] = set()
    for rec in read_done_records(layout).values():
        paths |= {f.path for f in rec.all_files()}
    for unit_id in intent_ids(layout):
        intent = read_intent(layout, unit_id)
        if intent:
            paths |= {m["path"] for m in intent["moves"]}
    return sorted(paths)
