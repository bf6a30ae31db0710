"""The plan: the list of units, written once into the output folder and reused forever.

Made by exactly one process (the planner) on the first run; every other rank waits for
it on the shared filesystem. Reusing it means inputs added later never reshuffle units
that are already finished.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from ..errors import WebsslError
from ..units import Unit, json_text_utf8
from ..atomic_io import exclusive_create, read_json_file
from .layout import OutputLayout
from .records import utc_now
from .runconfig import load_run_config, refusal, same_settings, settings_diff


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_plan(layout: OutputLayout) -> list[Unit] | None:
    """The saved plan, or None if there is none (yet)."""
    data = _read_plan(layout)
    return None if data is None else _units(layout, data)


def _read_plan(layout: OutputLayout) -> dict[str, Any] | None:
    path = layout.plan_path
    try:
        return read_json_file(path)
    except ValueError as exc:
        raise WebsslError(f"plan {path} is unreadable ({exc}), so the output folder cannot "
                          "be resumed: delete the folder (or use another --out) and rerun") from None


def _units(layout: OutputLayout, data: dict[str, Any]) -> list[Unit]:
    try:
        return [Unit.from_dict(u) for u in data["units"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise WebsslError(f"plan {layout.plan_path} is malformed ({exc!r}), so the output "
                          "folder cannot be resumed: delete the folder (or use another --out) "
                          "and rerun") from None


def _check_units(units: list[Unit]) -> None:
    for pos, unit in enumerate(units):
        if unit.index != pos:
            raise ValueError(f"plan unit {unit.name!r} has index {unit.index} at position {pos}: "
                             "unit indexes must be 0..n-1 in plan order")


def save_or_load_plan(layout: OutputLayout, make_plan: Callable[[], list[Unit]], *,
                      is_planner: bool, wait_seconds: float,
                      fields: dict[str, Any] | None = None, overwrite: bool = False,
                      recheck: Callable[[], list[Unit]] | None = None,
                      say: Callable[[str], None] = _stderr) -> list[Unit]:
    """Planner: load the saved plan, or make it and write it with exclusive create
    (losing a race loads the winner's). Others: poll for it up to ``wait_seconds``.

    ``fields`` (non-planner, optional): also wait until the run config has these fields'
    fingerprint and the plan belongs to that run config, so a rank started alongside a
    planner that is applying ``--overwrite`` never picks up the discarded plan. A run
    config with other settings is final (UsageError with the differing fields) unless this
    rank was started with ``overwrite`` too: then the planner may be replacing it, and the
    rank waits (saying once what for).

    ``recheck`` (planner, optional): re-plans the current inputs when the saved plan is
    reused, to warn (through ``say``) about samples or shards the plan lacks. The plan is
    never changed.
    """
    layout.check_out_dir()
    if is_planner:
        units = load_plan(layout)
        if units is not None:
            if recheck is not None:
                warn_new_inputs(layout, units, recheck, say)
            return units
        units = list(make_plan())
        _check_units(units)
        config = load_run_config(layout)
        doc = {"created": utc_now(), "run_id": config.run_id if config else None,
               "units": [u.to_dict() for u in units]}
        # compact: a plan of path-list units can hold millions of file names. A path whose
        # bytes are not UTF-8 (a lone surrogate in Python) is kept as a \udcXX JSON escape,
        # so the plan stays UTF-8 and loads back the real path
        data = json_text_utf8(json.dumps(doc, separators=(",", ":"), ensure_ascii=False)).encode()
        if exclusive_create(layout.plan_path, data):
            return units
        return save_or_load_plan(layout, make_plan, is_planner=False, wait_seconds=wait_seconds)
    return _wait_for_plan(layout, wait_seconds, fields, overwrite, say)


def _wait_for_plan(layout: OutputLayout, wait_seconds: float, fields: dict[str, Any] | None,
                   overwrite: bool, say: Callable[[str], None]) -> list[Unit]:
    deadline = time.monotonic() + max(0.0, wait_seconds)
    delay = 0.05
    said = False
    while True:
        why = _plan_ready(layout, fields, overwrite)
        if isinstance(why, list):
            return why
        if why.startswith(_OTHER_SETTINGS) and not said:
            said = True
            say(f"waiting up to {wait_seconds:g} s for the planner's --overwrite to replace the "
                f"run config {layout.run_config_path}: {why}")
        if time.monotonic() >= deadline:
            raise WebsslError(
                f"{why[:1].upper()}{why[1:]}: timed out after {wait_seconds:g} s waiting for the "
                f"plan {layout.plan_path}. It is written by the planner rank (rank 0, or the "
                "launcher) on the first run: check that it is running, that every rank uses the "
                "same --out and the same settings on a filesystem they all share, and the "
                "planner's log for errors. If planning a large input takes longer, start the "
                "other ranks later or raise the plan wait (RuntimeConfig.plan_wait_seconds).")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 2.0)


_OTHER_SETTINGS = "the run config has other settings"


def _plan_ready(layout: OutputLayout, fields: dict[str, Any] | None,
                overwrite: bool) -> list[Unit] | str:
    config = load_run_config(layout) if fields is not None else None
    if config is not None and not same_settings(config, fields):
        if not overwrite:                  # nobody will replace it: final
            raise refusal(layout, config, fields)
        changes = "; ".join(settings_diff(config, fields))
        return (f"{_OTHER_SETTINGS} than this rank ({layout.run_config_path}, previous -> this "
                f"rank: {changes})")
    data = _read_plan(layout)
    if data is None:
        return f"the plan file {layout.plan_path} does not exist yet"
    if fields is None:
        return _units(layout, data)
    if config is None:
        return f"the run config {layout.run_config_path} does not exist yet"
    if data.get("run_id") not in (None, config.run_id):
        return "the plan belongs to a previous run config"
    return _units(layout, data)


def _inventory(units: list[Unit]) -> tuple[set[str], set[str], dict[str, int]]:
    """(tar shards, image files, parquet source -> rows) of a plan."""
    tars, files, rows = set(), set(), {}
    for u in units:
        if u.kind == "tar":
            tars.add(u.source)
        elif u.kind == "files":
            files.update(u.items)
        elif u.row_range is not None:
            rows[u.source] = max(rows.get(u.source, 0), u.row_range[1])
    return tars, files, rows


def new_inputs(saved: list[Unit], current: list[Unit]) -> list[str]:
    """What the current plan of the inputs has that the saved plan lacks, one phrase per
    kind, e.g. ``["3 image files (first: /data/new.jpg)", "1 tar shard (first: ...)"]``."""
    old_t, old_f, old_r = _inventory(saved)
    new_t, new_f, new_r = _inventory(current)
    out = []
    for n, what, first in ((len(new_t - old_t), "tar shard", min(new_t - old_t, default="")),
                           (len(new_f - old_f), "image file", min(new_f - old_f, default=""))):
        if n:
            out.append(f"{n} {what}{'' if n == 1 else 's'} (first: {first})")
    extra = {src: n - old_r.get(src, 0) for src, n in new_r.items() if n > old_r.get(src, 0)}
    if extra:
        rows = sum(extra.values())
        out.append(f"{rows} parquet row{'' if rows == 1 else 's'} in {len(extra)} file"
                   f"{'' if len(extra) == 1 else 's'} (first: {min(extra)})")
    return out


def warn_new_inputs(layout: OutputLayout, units: list[Unit],
                    recheck: Callable[[], list[Unit]], say: Callable[[str], None]) -> list[str]:
    """Re-plan the inputs and warn when they hold samples the saved plan lacks (which this
    folder never extracts). Inputs that cannot be planned now are left to the run to report."""
    try:
        added = new_inputs(units, list(recheck()))
    except (WebsslError, OSError, ValueError):
        return []
    if added:
        say(f"warning: the inputs now hold {' and '.join(added)} that the plan of this output "
            f"folder ({layout.plan_path}, made by its first run) does not have; they are not "
            "extracted into this folder (its plan never changes). To extract them, use a new "
            "--out (with just the new inputs), or remove this folder and rerun to redo "
            "everything from the current inputs.")
    return added
