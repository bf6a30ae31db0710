"""Who am I in the job: rank, world size and local rank from torchrun, SLURM or `--gpus`.

Precedence: torchrun variables (RANK/WORLD_SIZE/LOCAL_RANK), then SLURM (SLURM_PROCID/
SLURM_NTASKS/SLURM_LOCALID, combined with SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT for job
arrays), else a single process. A half-set environment is an error, never a guess.
No collective communication is used, so no rank ever waits for a missing peer.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import UsageError

TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
SLURM = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
ARRAY = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "single"          # single | torchrun | slurm | slurm-array | gpus
    host: str = ""
    job: str = ""                     # shared by the ranks of one job ("" alone: job_id)

    @property
    def owner(self) -> str:
        """Identity written into claims and done-records."""
        return f"{self.host}:{os.getpid()}:rank{self.rank}"

    @property
    def is_planner(self) -> bool:
        """Who writes the plan. In job arrays any task may (the first exclusive create wins),
        since task 0 may not be scheduled at all."""
        return self.rank == 0 or self.launcher == "slurm-array"

    @property
    def prefix(self) -> str:
        return f"[rank {self.rank}/{self.world_size}]" if self.world_size > 1 else ""


def _ints(env: Mapping[str, str], names: tuple[str, ...], what: str) -> list[int] | None:
    present = [n for n in names if env.get(n, "") != ""]
    if not present:
        return None
    if len(present) != len(names):
        missing = [n for n in names if n not in present]
        raise UsageError(f"{what} environment is half set: {', '.join(present)} given but "
                         f"{', '.join(missing)} missing. Set all of {', '.join(names)} or none.")
    try:
        return [int(env[n]) for n in names]
    except ValueError:
        raise UsageError(f"{what} environment: {', '.join(f'{n}={env[n]!r}' for n in names)} "
                         "must be integers") from None


def job_id(env: Mapping[str, str]) -> str:
    """What the ranks of one launch share, so that they tell its unit failures from an
    earlier launch's (store/unit_failures.py: a launch's ranks skip units another of its
    ranks gave up, which that rank reports; a later launch retries them): ``WEBSSL_JOB_ID``
    if set (the ``--gpus`` launcher sets one per launch), else SLURM's job (or array job)
    id, step and restart count (srun steps only: a batch script is no step), else
    torchrun's run id, rendezvous address and restart count (the run id alone is "none"
    unless --rdzv-id is given, the same for every launch; --standalone picks a new port
    each time); "" otherwise. :func:`detect_rank` gives a lone process no job."""
    if env.get("WEBSSL_JOB_ID"):
        return env["WEBSSL_JOB_ID"]
    slurm = env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID")
    if slurm and env.get("SLURM_STEP_ID"):
        return (f"slurm:{slurm}.{env['SLURM_STEP_ID']}:"
                f"{env.get('SLURM_RESTART_COUNT', '0')}")
    if env.get("TORCHELASTIC_RUN_ID"):
        where = f"{env.get('MASTER_ADDR', '')}:{env.get('MASTER_PORT', '')}"
        return (f"torchrun:{env['TORCHELASTIC_RUN_ID']}@{where}:"
                f"{env.get('TORCHELASTIC_RESTART_COUNT', '0')}")
    return ""


def detect_rank(env: Mapping[str, str] | None = None) -> RankInfo:
    env = os.environ if env is None else env
    host, job = socket.gethostname(), job_id(env)
    tr = _ints(env, TORCHRUN, "torchrun")
    if tr is not None:
        rank, world, local = tr
        launcher = env.get("WEBSSL_LAUNCHER", "torchrun")
        return _checked(RankInfo(rank, world, local, launcher, host, job))
    sl = _ints(env, SLURM, "SLURM")
    arr = _ints(env, ARRAY, "SLURM job-array")
    if sl is None and arr is None:     # a lone process: no other rank reports for it
        return RankInfo(host=host, job=env.get("WEBSSL_JOB_ID", ""))
    proc, ntasks, local = sl if sl is not None else (0, 1, 0)
    if arr is None:
        return _checked(RankInfo(proc, ntasks, local, "slurm", host, job))
    task_id, count = arr
    first = int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
    index = task_id - first
    # Sparse arrays (--array=3,17,42 or 0-63:2) have task ids beyond MIN + COUNT. In an array
    # the rank only names the process in logs (any task may plan, units are claimed
    # dynamically), so the world grows to cover the id instead of refusing it.
    rank = index * ntasks + proc
    world = max(count, index + 1) * ntasks
    return _checked(RankInfo(rank, world, local, "slurm-array", host, job))


def _checked(info: RankInfo) -> RankInfo:
    if info.world_size < 1 or not 0 <= info.rank < info.world_size or info.local_rank < 0:
        raise UsageError(f"inconsistent rank environment: rank {info.rank}, world size "
                         f"{info.world_size}, local rank {info.local_rank} ({info.launcher})")
    return info
