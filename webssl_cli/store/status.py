"""What ``webssl status OUT`` reports: progress, failures, fingerprint, claims, damage."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .claims import list_claims
from .commit import pending_commits, read_done_records
from .layout import OutputLayout
from .plan import load_plan
from .records import ClaimInfo
from .runconfig import load_run_config
from .unit_failures import UnitFailure, list_unit_failures


@dataclass
class StatusReport:
    out_dir: str
    manifest_dir: str
    has_plan: bool
    units_total: int
    units_done: int
    rows: int
    failed_rows: int
    units_with_failures: int
    bytes: int
    fingerprint: str | None
    fields: dict[str, Any]
    created: str | None
    claims: list[ClaimInfo] = field(default_factory=list)    # claimed, not finished
    pending_commits: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    failed_units: list[UnitFailure] = field(default_factory=list)  # given up, not done since

    @property
    def complete(self) -> bool:
        return self.has_plan and self.units_done == self.units_total

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["complete"] = self.complete
        return d


def get_status(out_dir: str | Path, manifest_name: str = "_webssl") -> StatusReport:
    """Read-only summary of an output folder; UsageError if it has no manifest."""
    layout = OutputLayout(out_dir, manifest_name)
    if not layout.exists():
        raise UsageError(f"{layout.out_dir} has no webssl manifest ({layout.manifest_dir} with "
                         "run.json/plan.json): not an output folder of `webssl extract` (yet), "
                         "or it was written with another --manifest-name")
    config = load_run_config(layout)
    plan = load_plan(layout)
    done = read_done_records(layout)
    plan_ids = {u.id for u in plan} if plan is not None else set(done)
    done = {k: v for k, v in done.items() if k in plan_ids}
    return StatusReport(
        out_dir=str(layout.out_dir), manifest_dir=str(layout.manifest_dir),
        has_plan=plan is not None, units_total=len(plan) if plan is not None else 0,
        units_done=len(done), rows=sum(r.rows for r in done.values()),
        failed_rows=sum(r.failed for r in done.values()),
        units_with_failures=sum(1 for r in done.values() if r.failed),
        bytes=sum(f.bytes for r in done.values() for f in r.all_files()),
        fingerprint=config.fingerprint if config else None,
        fields=config.fields if config else {}, created=config.created if config else None,
        claims=[c for c in list_claims(layout) if c.unit_id not in done],
        pending_commits=pending_commits(layout, done),
        missing_files=_missing_files(layout, done),
        failed_units=[f for f in list_unit_failures(layout) if f.unit_id not in done])


def _missing_files(layout: OutputLayout, done: dict) -> list[str]:
    problems = []
    for rec in done.values():
        for info in rec.all_files():
            try:
                size = os.stat(layout.abs(info.path)).st_size
            except FileNotFoundError:
                problems.append(f"{info.path} (missing)")
                continue
            if size != info.bytes:
                problems.append(f"{info.path} ({size} bytes, done-record says {info.bytes})")
    return sorted(problems)
