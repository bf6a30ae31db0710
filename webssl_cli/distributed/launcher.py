"""`webssl extract --gpus N`: start N local worker processes, one per GPU, no torchrun needed.

The parent validates inputs, fetches weights and writes the plan before any worker starts;
each worker runs the same per-rank code path as torchrun/srun ranks (RANK/WORLD_SIZE/
LOCAL_RANK set, device cuda:LOCAL_RANK, or the --device given). The parent shows overall
progress from the done-records and forwards SIGINT/SIGTERM/SIGUSR1 to the workers, so Ctrl-C
stops all of them cleanly.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from ..config import ExtractConfig
from ..config_io import config_to_json
from ..errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_PREEMPTED, EXIT_RUNTIME, UsageError
from .env import RankInfo, job_id


def launch_local(cfg: ExtractConfig):
    from ..model_step import pick_device, pick_precision
    from ..pipeline.progress import Counters, Progress
    from ..pipeline.runner import RunResult
    from ..pipeline.setup import prepare
    from ..store import done_units

    n = cfg.runtime.gpus
    device = pick_device(cfg.model.device)
    if device.type == "cpu" and cfg.model.device is None:
        raise UsageError(f"--gpus {n}: no CUDA device is visible. Check CUDA_VISIBLE_DEVICES "
                         "and the driver; to run N worker processes on the CPU instead "
                         "(testing), add --device cpu")
    if device.type == "cuda":
        import torch
        have = torch.cuda.device_count()
        if n > have:
            raise UsageError(f"--gpus {n}: only {have} CUDA device(s) visible")
    prep = prepare(cfg, RankInfo(launcher="gpus"), pick_precision(cfg.model.precision, device))
    child_cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, gpus=0),
                                    model=dataclasses.replace(cfg.model, device=cfg.model.device
                                                              if device.type == "cpu" else None))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        fh.write(config_to_json(child_cfg))
        cfg_path = fh.name
    procs: list[subprocess.Popen] = []
    job = job_id(os.environ) or f"gpus:{socket.gethostname()}:{os.getpid()}:{time.time():.0f}"
    for r in range(n):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(n), LOCAL_RANK=str(r),
                   WEBSSL_LAUNCHER="gpus", WEBSSL_JOB_ID=job)
        for k in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
            env.pop(k, None)
        if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # N CPU workers each using every core only fight over them (torchrun sets 1)
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
        procs.append(subprocess.Popen([sys.executable, "-m", "webssl_cli.distributed.worker",
                                       cfg_path], env=env))

    stopped: list[str] = []

    def forward(signum, _frame):
        stopped.append(signal.Signals(signum).name)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    before = set(done_units(prep.layout))
    counters = Counters()
    counters.loop_started = counters.started
    progress = Progress(len(prep.units), len(before), "[gpus]", cfg.runtime.progress_every,
                        done_counter=lambda: len(before) + counters.units_done)
    try:
        while any(p.poll() is None for p in procs):
            job_totals(prep.layout, before, counters)
            progress.update(counters)
            time.sleep(0.5)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        job_totals(prep.layout, before, counters)
        progress.update(counters, force=True)
        progress.close()
        os.unlink(cfg_path)
    codes = [p.returncode for p in procs]
    done = len(before) + counters.units_done
    code = exit_code(codes, complete=done == len(prep.units), stopped=bool(stopped))
    text = (f"--gpus {n}: {counters.images} images in {counters.elapsed:.1f}s, "
            f"{counters.units_done} units done here, {done}/{len(prep.units)} in all, "
            f"{counters.failures} failed samples. Workers: {worker_report(codes)}.")
    print(f"[gpus] {text}", file=sys.stderr, flush=True)
    return RunResult(code, len(prep.units), counters.units_done, [], counters.images,
                     counters.failures, counters.elapsed, counters.elapsed, summary=text)


def job_totals(layout, before: set[str], counters) -> None:
    """Units, images and failed samples committed by the workers since the launch, from the
    done-records (the workers' own counters live in their processes)."""
    from ..store import done_units
    new = [r for u, r in done_units(layout, recover=False).items() if u not in before]
    counters.units_done = len(new)
    counters.images = sum(r.rows for r in new)
    counters.failures = sum(r.failed for r in new)


def exit_code(codes: list[int], complete: bool, stopped: bool) -> int:
    """The job's exit code from the workers'. A complete output is success even when a worker
    died on the way (another one finished its units); a stop signal to the launcher is 4; a
    worker killed from outside (e.g. the out-of-memory killer) or failing is 1; units given
    up are 3."""
    if all(c == EXIT_OK for c in codes) or (complete and not stopped
                                            and EXIT_INCOMPLETE not in codes):
        return EXIT_OK
    if stopped or EXIT_PREEMPTED in codes:
        return EXIT_PREEMPTED
    if all(c in (EXIT_OK, EXIT_INCOMPLETE) for c in codes):
        return EXIT_INCOMPLETE
    return EXIT_RUNTIME


def worker_report(codes: list[int]) -> str:
    """'rank 0 exit 0, rank 1 killed by SIGKILL' for the summary."""
    parts = []
    for r, c in enumerate(codes):
        if c < 0:
            try:
                how = f"killed by {signal.Signals(-c).name}"
            except ValueError:
                how = f"killed by signal {-c}"
        else:
            how = f"exit {c}"
        parts.append(f"rank {r} {how}")
    return ", ".join(parts)
