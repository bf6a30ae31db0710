"""What ``webssl status OUT`` reports: progress, failures, fingerprint, claims, damage."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .claims import list_claims
from .commit import pending_commits, read_done_records
from .layout import OutputLayout
from .plan import load_plan
from .records import ClaimInfo
from .repair import damaged_units
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
    damaged_units: list[str] = field(default_factory=list)  # done, but a file missing/changed
    repair: str = ""          # what to do about damaged units ("" when there are none)

    @property
    def complete(self) -> bool:
        """Every unit done, and every file of every done unit as its done-record says."""
        return self.has_plan and self.units_done == self.units_total and not self.damaged_units

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["complete"] = self.complete
        return d


def get_status(out_dir: str | Path, manifest_name: str = "_webssl") -> StatusReport:
    """Read-only summary of an output folder; UsageError if it has no manifest."""
    layout = OutputLayout(out_dir, manifest_name)
    if not layout.out_dir.exists():
        raise UsageError(f"{out_dir}: no such folder; give the --out folder of `webssl extract`")
    if not layout.out_dir.is_dir():
        raise UsageError(f"{out_dir}: is a file, not a folder; give the --out folder of "
                         "`webssl extract`")
    if not layout.exists():
        raise UsageError(f"{layout.out_dir} has no webssl manifest ({layout.manifest_dir} with "
                         "run.json/plan.json): not an output folder of `webssl extract` (yet), "
                         "or it was written with another --manifest-name")
    config = load_run_config(layout)
    plan = load_plan(layout)
    done = read_done_records(layout)
    plan_ids = {u.id for u in plan} if plan is not None else set(done)
    done = {k: v for k, v in done.items() if k in plan_ids}
    damaged = damaged_units(layout, done)
    missing = damaged_units(layout, done, ledgers=True)     # lost ledgers too: report only
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
        missing_files=sorted(p for problems in missing.values() for p in problems),
        failed_units=[f for f in list_unit_failures(layout) if f.unit_id not in done],
        damaged_units=sorted(damaged), repair=_repair_advice(layout, sorted(damaged)))


def _repair_advice(layout: OutputLayout, damaged: list[str]) -> str:
    if not damaged:
        return ""
    n = len(damaged)
    return (f"{n} finished unit{'' if n == 1 else 's'} ({', '.join(damaged[:5])}"
            f"{', ...' if n > 5 else ''}) of {layout.out_dir} "
            f"{'has' if n == 1 else 'have'} missing or changed files: rerun the same "
            "`webssl extract` command to redo "
            f"{'it' if n == 1 else 'them'} (the rerun reopens such units by itself)")
