"""The plan: the list of units, written once into the output folder and reused forever.

Made by exactly one process (the planner) on the first run; every other rank waits for
it on the shared filesystem. Reusing it means inputs added later never reshuffle units
that are already finished.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ..errors import WebsslError
from ..units import Unit
from ..atomic_io import exclusive_create, read_json_file
from .layout import OutputLayout
from .records import utc_now
from .runconfig import canonical_fields, diff_fields, fingerprint, load_run_config


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
                      fields: dict[str, Any] | None = None) -> list[Unit]:
    """Planner: load the saved plan, or make it and write it with exclusive create
    (losing a race loads the winner's). Others: poll for it up to ``wait_seconds``.

    ``fields`` (non-planner, optional): also wait until the run config has these fields'
    fingerprint and the plan belongs to that run config, so a rank started alongside a
    planner that is applying ``--overwrite`` never picks up the discarded plan.
    """
    if is_planner:
        units = load_plan(layout)
        if units is not None:
            return units
        units = list(make_plan())
        _check_units(units)
        config = load_run_config(layout)
        doc = {"created": utc_now(), "run_id": config.run_id if config else None,
               "units": [u.to_dict() for u in units]}
        # compact: a plan of path-list units can hold millions of file names
        data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        if exclusive_create(layout.plan_path, data):
            return units
        return save_or_load_plan(layout, make_plan, is_planner=False, wait_seconds=wait_seconds)
    return _wait_for_plan(layout, wait_seconds, fields)


def _wait_for_plan(layout: OutputLayout, wait_seconds: float,
                   fields: dict[str, Any] | None) -> list[Unit]:
    deadline = time.monotonic() + max(0.0, wait_seconds)
    delay = 0.05
    while True:
        why = _plan_ready(layout, fields)
        if isinstance(why, list):
            return why
        if time.monotonic() >= deadline:
            raise WebsslError(
                f"timed out after {wait_seconds:g} s waiting for the plan {layout.plan_path} "
                f"({why}). It is written by the planner rank (rank 0, or the launcher) on the "
                "first run: check that it is running, that every rank uses the same --out on a "
                "filesystem they all share, and the planner's log for errors. If planning a large "
                "input takes longer, start the other ranks later or raise the plan wait "
                "(RuntimeConfig.plan_wait_seconds).")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 2.0)


def _plan_ready(layout: OutputLayout, fields: dict[str, Any] | None) -> list[Unit] | str:
    data = _read_plan(layout)
    if data is None:
        return "the plan file does not exist yet"
    if fields is None:
        return _units(layout, data)
    config = load_run_config(layout)
    if config is None:
        return f"the run config {layout.run_config_path} does not exist yet"
    if config.fingerprint != fingerprint(fields):
        changes = "; ".join(diff_fields(config.fields, canonical_fields(fields)))
        return (f"the run config {layout.run_config_path} has other settings than this rank "
                f"(previous -> this rank: {changes})")
    if data.get("run_id") not in (None, config.run_id):
        return "the plan belongs to a previous run config"
    return _units(layout, data)
