"""Upkeep of an output folder when a run starts (the planner rank does it, before claiming):

* finished units whose data files are gone or changed (checked cheaply: existence and the
  size the done-record recorded) are reopened, so the run redoes them;
* temp files (``.<name>.<pid>-<random>.tmp``) that killed processes left in the manifest
  folders are swept once they are an hour old.

Both are idempotent: an interrupted reopen or sweep is simply repeated by the next run.
"""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from ..atomic_io import fsync_dir, read_json_file, remove_quietly
from ..errors import WebsslError
from .claims import hold_unit
from .commit import read_done_records, read_intent
from .layout import OutputLayout
from .records import DoneRecord, FileInfo

STALE_TEMP_SECONDS = 3600.0     # a temp file this old was left by a killed process


def file_problem(layout: OutputLayout, info: FileInfo) -> str | None:
    """Why a committed file no longer is what its done-record says, or None if it is."""
    try:
        size = os.stat(layout.abs(info.path)).st_size
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    if size != info.bytes:
        return f"{size} bytes, done-record says {info.bytes}"
    return None


def damaged_units(layout: OutputLayout, done: dict[str, DoneRecord],
                  ledgers: bool = False) -> dict[str, list[str]]:
    """unit id -> ``"path (why)"`` for every finished unit with a missing or changed data
    file (``ledgers``: its failure ledger too). A lost ledger alone loses no features, so it
    never makes a unit redone: status reports it, the data stay."""
    out: dict[str, list[str]] = {}
    for uid, rec in done.items():
        files = rec.all_files() if ledgers else rec.files
        problems = [f"{info.path} ({why})" for info in files
                    if (why := file_problem(layout, info)) is not None]
        if problems:
            out[uid] = problems
    return out


def reopen_damaged_units(layout: OutputLayout, say: Callable[[str], None]) -> list[str]:
    """Make every finished unit with a missing or changed file claimable again; returns
    their ids. Meant for the planner when a run starts; safe in several processes at once
    (job arrays, where every task plans) and while other ranks claim and commit.

    Each unit is reopened under a claim (``claims.hold_unit``), so no other process works
    on it meanwhile, and its done-record is re-read and re-checked under that claim. Then,
    in an order that is safe to interrupt: the unit's remaining files go first (the redo
    writes them anew, and a later ``--overwrite`` could not find them once the records are
    gone), then its commit intent, then the done-record, last; the claim is released after.
    """
    owner = f"{socket.gethostname()}:{os.getpid()}:reopen"
    reopened = []
    records = read_done_records(layout)
    for uid, problems in sorted(damaged_units(layout, records).items()):
        gone = _source_gone(records[uid].source)
        if gone:
            say(f"warning: unit {uid} ({records[uid].unit_name}) has {', '.join(problems)}, "
                f"but its input {gone} no longer exists, so it cannot be redone: its other "
                "files are kept. Restore the input and rerun to redo it.")
            continue
        with hold_unit(layout, uid, owner) as held:
            if held and _reopen(layout, uid, say):
                reopened.append(uid)
    return reopened


def _reopen(layout: OutputLayout, uid: str, say: Callable[[str], None]) -> bool:
    try:
        data = read_json_file(layout.done_path(uid))
        rec = None if data is None else DoneRecord.from_dict(data)
    except (ValueError, KeyError, TypeError):
        return False                        # unreadable: reported by read_done_records
    problems = damaged_units(layout, {uid: rec}).get(uid) if rec is not None else None
    if not problems:
        return False                        # reopened and redone by another process meanwhile
    try:
        intent = read_intent(layout, uid)
    except WebsslError:
        intent = None                       # unreadable: as good as none, removed below
    if intent is not None and _intent_record(intent) != rec:
        say(f"warning: unit {uid} ({rec.unit_name}) has {', '.join(problems)}, but its commit "
            f"intent {layout.commit_path(uid)} is not its done-record's; left alone. Delete "
            f"{layout.done_path(uid)} and that intent to redo the unit.")
        return False
    for info in rec.all_files():
        remove_quietly(layout.abs(info.path))
    remove_quietly(layout.commit_path(uid))
    fsync_dir(layout.commits_dir)
    remove_quietly(layout.done_path(uid))
    fsync_dir(layout.done_dir)
    say(f"warning: unit {uid} ({rec.unit_name}, from {rec.source}) was finished, but files "
        f"of it under {layout.out_dir} are missing or changed: {', '.join(problems)}; the unit "
        "is redone by this run.")
    return True


def _source_gone(source: str) -> str | None:
    """The local input path of a unit when it no longer exists (a redo would fail and the
    unit's remaining files would be lost for nothing); None when it exists or is remote."""
    if "://" in source or source.startswith("pipe:"):
        return None
    path = source.rstrip("/") or "/"
    return None if os.path.exists(path) else path


def _intent_record(intent: dict) -> DoneRecord | None:
    try:
        return DoneRecord.from_dict(intent["record"])
    except (KeyError, TypeError, ValueError):
        return None


def sweep_temp_files(layout: OutputLayout, older_than: float = STALE_TEMP_SECONDS) -> list[str]:
    """Remove temp files (``.*.tmp``) older than ``older_than`` seconds from the manifest
    folders (staging has its own sweep); returns their paths relative to the output folder.
    Live writers' temp files exist for moments, so an hour-old one was left by a crash."""
    limit = time.time() - older_than
    removed = []
    for folder in (layout.manifest_dir, layout.done_dir, layout.commits_dir, layout.claims_dir,
                   layout.failures_dir, layout.unit_failures_dir):
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            if not (e.name.startswith(".") and e.name.endswith(".tmp")):
                continue
            try:
                if e.is_file(follow_symlinks=False) and e.stat().st_mtime < limit:
                    os.unlink(e.path)
                    removed.append(layout.rel(e.path))
            except FileNotFoundError:
                continue
    return removed


def tidy_on_start(layout: OutputLayout, say: Callable[[str], None]) -> list[str]:
    """The planner's upkeep at the start of a run: sweep stale temp files, then reopen
    damaged finished units (their ids are returned)."""
    sweep_temp_files(layout)
    return reopen_damaged_units(layout, say)
