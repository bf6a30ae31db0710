"""`webssl extract --gpus N`: start N local worker processes, one per GPU, no torchrun needed.

The parent validates inputs, fetches weights and writes the plan before any worker starts;
each worker runs the same per-rank code path as torchrun/srun ranks (RANK/WORLD_SIZE/
LOCAL_RANK set, device cuda:LOCAL_RANK, or the --device given). The parent shows overall
progress from the done-records and forwards SIGINT/SIGTERM/SIGUSR1 to the workers, so Ctrl-C
stops all of them cleanly (from the main thread; called from another thread it installs no
handlers and the caller handles signals). No worker outlives the launch, whatever ends it.
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

from ..atomic_io import remove_quietly
from ..config import ExtractConfig
from ..config_io import config_to_json
from ..errors import (EXIT_INCOMPLETE, EXIT_OK, EXIT_PREEMPTED, EXIT_RUNTIME, EXIT_USAGE,
                      Preempted, UsageError)
from ..store.unit_failures import failed_in_job
from .env import RankInfo
from .signals import StopFlag, current_policy, installed, preemption_handlers


STOP_WAIT = 60.0      # seconds a worker gets to stop cleanly (SIGTERM) before it is killed


def launch_local(cfg: ExtractConfig):
    """Run the job in ``cfg.runtime.gpus`` worker processes; returns the job's RunResult.
    Whatever happens once the workers' config file is written (an error, an exception from
    a stop signal), the workers are stopped and the file is removed before this returns."""
    from ..model_step import pick_precision
    from ..pipeline.model_setup import check_attention
    from ..pipeline.result import RunResult
    from ..pipeline.setup import prepare

    n, device = worker_device(cfg)
    precision = pick_precision(cfg.model.precision, device)
    check_attention(cfg, device, precision)
    flag = StopFlag()
    with preemption_handlers(flag, "[gpus]"):     # planning and the weights check: a stop
        flag.interruptible = True                  # ends them (the Python API has no other
        try:                                       # handler here)
            prep = prepare(cfg, RankInfo(launcher="gpus"), precision)
        except Preempted as exc:
            return RunResult(EXIT_PREEMPTED, 0, 0, summary=str(exc))
        flag.interruptible = False
        # one id per launch (not the allocation's): a relaunch retries what this one gave up
        job = f"gpus:{socket.gethostname()}:{os.getpid()}:{time.time():.0f}"
        workers = Workers(n, job, device.type == "cpu")
        cfg_path = None
        try:
            cfg_path = write_config(child_config(cfg, device))
            with installed(workers.forward):    # main thread only; else the caller's handling
                if flag:                         # stopped since planning: start no worker
                    workers.stopped.append(str(flag.signal_name))
                workers.start(cfg_path)
                before, counters = supervise(workers, prep, cfg.runtime.progress_every)
        finally:
            workers.stop()
            if cfg_path is not None:
                remove_quietly(cfg_path)
    return job_result(prep, job, workers, len(before) + counters.units_done, counters)


def worker_device(cfg: ExtractConfig):
    """(N, the device the workers use), checked: N CUDA devices must be visible, or the CPU
    must have been asked for."""
    from ..model_step import pick_device
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
    return n, device


def child_config(cfg: ExtractConfig, device) -> ExtractConfig:
    """The workers' config: no --gpus, and the device left to each rank unless it is the CPU."""
    return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, gpus=0),
                               model=dataclasses.replace(cfg.model, device=cfg.model.device
                                                         if device.type == "cpu" else None))


def write_config(cfg: ExtractConfig) -> str:
    """``cfg`` as JSON in a temporary file (removed here if the write fails); its path."""
    fd, path = tempfile.mkstemp(suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(config_to_json(cfg))
    except BaseException:
        remove_quietly(path)
        raise
    return path


class Workers:
    """The worker processes of one launch, and the stop signals the launcher forwarded."""

    def __init__(self, n: int, job: str, cpu: bool) -> None:
        self.n, self.job, self.cpu = n, job, cpu
        self.procs: list[subprocess.Popen] = []
        self.stopped: list[str] = []

    def start(self, cfg_path: str) -> None:
        """Start the ranks; none after a stop signal (it would not have been forwarded)."""
        for r in range(self.n):
            if self.stopped:
                break
            # a process group of their own: a terminal's Ctrl-C reaches the launcher only,
            # which forwards it once (twice made every worker exit at once, as a second
            # signal does); each gets SIGTERM (a clean stop) if the launcher dies (worker.py)
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "webssl_cli.distributed.worker", cfg_path],
                env=self.env(r), process_group=0))

    def env(self, r: int) -> dict[str, str]:
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(self.n), LOCAL_RANK=str(r),
                   LOCAL_WORLD_SIZE=str(self.n),
                   WEBSSL_LAUNCHER="gpus", WEBSSL_JOB_ID=self.job,
                   WEBSSL_LAUNCHER_PID=str(os.getpid()))
        for k in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
            env.pop(k, None)
        if self.cpu and "OMP_NUM_THREADS" not in os.environ:
            # N CPU workers each using every core only fight over them (torchrun sets 1)
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.n))
        return env

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def send(self, signum: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signum)

    def forward(self, signum, _frame) -> None:
        """The launcher's stop-signal handler: pass the signal on to the workers (a second
        one makes them exit at once). Under the Python API's policy a second signal also
        raises here (the workers are then stopped by launch_local)."""
        name = signal.Signals(signum).name
        self.send(signum)
        policy = current_policy()
        if self.stopped and policy.api:
            raise policy.interruption(name)
        self.stopped.append(name)
        policy.note(name)

    def stop(self) -> None:
        """Make sure no worker outlives the launch: SIGTERM to those still running (they
        release their claims), SIGKILL after STOP_WAIT seconds."""
        self.send(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        for p in self.procs:
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    @property
    def codes(self) -> list[int]:
        return [p.returncode for p in self.procs]


def supervise(workers: Workers, prep, every: float):
    """Show the job's progress from the done-records until every worker has exited:
    (units done before the launch, the Counters of those committed since)."""
    from ..pipeline.progress import Counters, Progress
    from ..store import done_units
    before = set(done_units(prep.layout))
    counters = Counters()
    counters.loop_started = counters.started
    progress = Progress(len(prep.units), len(before), "[gpus]", every,
                        done_counter=lambda: len(before) + counters.units_done)
    try:
        while workers.running():
            job_totals(prep.layout, before, counters, workers.job)
            progress.update(counters)
            time.sleep(0.5)
    finally:
        job_totals(prep.layout, before, counters, workers.job)
        progress.update(counters, force=True)
        progress.close()
    return before, counters


def job_result(prep, job: str, workers: Workers, done: int, counters):
    """The job's RunResult (``done``: units done in all), and its summary line on stderr.
    Units failed: those the job's workers gave up (their unit-failure records) and nobody
    committed since."""
    from ..pipeline.result import RunResult
    from ..store import done_units
    n, codes = workers.n, workers.codes
    done_ids = set(done_units(prep.layout, recover=False))
    failed = sorted(failed_in_job(prep.layout, job, 0.0) - done_ids)
    complete = done == len(prep.units) or prep.cfg.runtime.limit_units is not None
    code = exit_code(codes, complete=complete, stopped=bool(workers.stopped))
    text = (f"--gpus {n}: {counters.images} images in {counters.elapsed:.1f}s, "
            f"{counters.units_done} units done here, {done}/{len(prep.units)} in all, "
            f"{counters.failures} failed samples. Workers: {worker_report(codes)}.")
    print(f"[gpus] {text}", file=sys.stderr, flush=True)
    return RunResult(code, len(prep.units), counters.units_done, failed, counters.images,
                     counters.failures, counters.elapsed, counters.elapsed, summary=text)


def job_totals(layout, before: set[str], counters, job: str) -> None:
    """Units, images and failed samples committed by the workers since the launch, from the
    done-records, and units they gave up (the workers' own counters live in their
    processes)."""
    from ..store import done_units
    done = done_units(layout, recover=False)
    new = [r for u, r in done.items() if u not in before]
    counters.units_done = len(new)
    counters.images = counters.images_written = sum(r.rows for r in new)
    counters.failures = sum(r.failed for r in new)
    counters.units_failed = len(failed_in_job(layout, job, 0.0) - set(done))


def exit_code(codes: list[int], complete: bool, stopped: bool) -> int:
    """The job's exit code from the workers'. A complete output (with --limit-units: the
    share asked for) is success even when a worker died on the way (another one finished its
    units); an incomplete one is never success, even when every worker exited 0; a stop
    signal to the launcher is 4; a worker killed from outside (e.g. the out-of-memory
    killer) or failing is 1 (2 when every one refused its settings); units given up are 3."""
    all_ok = all(c == EXIT_OK for c in codes)
    if complete and EXIT_INCOMPLETE not in codes and (all_ok or not stopped):
        return EXIT_OK
    if all_ok and not stopped:       # yet units are missing: exit 0 would say all is done
        return EXIT_INCOMPLETE
    if stopped or EXIT_PREEMPTED in codes:
        return EXIT_PREEMPTED
    if all(c in (EXIT_OK, EXIT_INCOMPLETE) for c in codes):
        return EXIT_INCOMPLETE
    if codes and all(c == EXIT_USAGE for c in codes):   # each refused the same settings
        return EXIT_USAGE
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
