"""Units a rank gave up on, recorded for the other ranks of the same job and for `status`.

``<manifest>/failed_units/<unit>.json`` holds the unit, the reason, the rank, its job and
when. A rank writes it when it gives a unit up (a truncated shard, a dropped connection); the
commit of the unit removes it. Ranks skip units given up by their own job: the job's other
ranks would otherwise each retry a broken shard, one after another, at the tail of the job
while everyone else waits (pipeline/others.py). A rerun is another job, so it retries them.
"The same job" is the launcher's job id (distributed/env.py ``job_id``: SLURM job, step and
restart count; torchrun run id; the ``--gpus`` launcher's own). Without one, a rank counts
the failures recorded since it started by processes without a job id either (file mtime
against this machine's clock): another command on the same output (a second shell) is not
a rank of "this job" that reports them, so such a run exits 3 for them (pipeline/runner.py).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from ..atomic_io import atomic_write_bytes, read_json_file, remove_quietly
from ..units import Unit, escape_undecodable
from .layout import OutputLayout
from .records import dumps, utc_now


@dataclass(frozen=True)
class UnitFailure:
    unit_id: str
    unit_name: str
    source: str
    reason: str
    owner: str
    failed_at: str
    job: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELDS = tuple(UnitFailure.__dataclass_fields__)


def record_unit_failure(layout: OutputLayout, unit: Unit, reason: str, owner: str,
                        job: str) -> None:
    # as shown (status, messages): a name's undecodable bytes as \xNN, like keys and sources
    info = UnitFailure(unit.id, unit.name, escape_undecodable(unit.source),
                       escape_undecodable(reason), owner, utc_now(), job)
    layout.unit_failures_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(layout.unit_failure_path(unit.id), dumps(info.to_dict()))


def clear_unit_failure(layout: OutputLayout, unit_id: str) -> None:
    remove_quietly(layout.unit_failure_path(unit_id))


# a record's job never changes once written; keyed by (inode, mtime) so a rewrite is re-read
_JOB_CACHE: dict[str, tuple[tuple[int, int], str]] = {}


def _job_of(path: str, st: os.stat_result) -> str:
    key = (st.st_ino, st.st_mtime_ns)
    cached = _JOB_CACHE.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    job = (read_json_file(path) or {}).get("job", "")
    _JOB_CACHE[path] = (key, job)
    return job


def _counts(path: str, job: str, started: float) -> bool:
    """The record at ``path`` is a failure of job ``job`` (see :func:`failed_in_job`)."""
    try:
        st = os.stat(path)
        return (bool(job) or st.st_mtime >= started) and _job_of(path, st) == job
    except (FileNotFoundError, ValueError):
        return False


def failed_in_job(layout: OutputLayout, job: str, started: float) -> set[str]:
    """Ids of units given up by job ``job``; for job "" those recorded at or after
    ``started`` (a time.time()) by processes without a job id (a job's failures are its
    own: a process outside it retries them, as a rerun would). Each record file is read once
    per process (then only stat'ed): ranks ask often, and a bad dataset has thousands."""
    try:
        names = [n for n in os.listdir(layout.unit_failures_dir) if n.endswith(".json")]
    except FileNotFoundError:
        return set()
    base = str(layout.unit_failures_dir)
    return {n[:-len(".json")] for n in names if _counts(os.path.join(base, n), job, started)}


def failed_in_job_now(layout: OutputLayout, unit_id: str, job: str, started: float) -> bool:
    """:func:`failed_in_job` for one unit, read now (one stat)."""
    return _counts(str(layout.unit_failure_path(unit_id)), job, started)


def list_unit_failures(layout: OutputLayout) -> list[UnitFailure]:
    """Every recorded unit failure, in unit order."""
    try:
        names = sorted(n for n in os.listdir(layout.unit_failures_dir) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        try:
            d = read_json_file(layout.unit_failures_dir / name)
        except ValueError:
            d = None
        if d:
            out.append(UnitFailure(**{k: str(d.get(k, "")) for k in FIELDS}))
    return out
