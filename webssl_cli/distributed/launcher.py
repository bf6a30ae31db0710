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
        procs.append(subprocess.Popen([sys.executable, "-m", "webssl_cli.distributed.worker",
                                       cfg_path], env=env))

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    counters = Counters()
    progress = Progress(len(prep.units), len(done_units(prep.layout)), "[gpus]",
                        cfg.runtime.progress_every,
                        done_counter=lambda: len(done_units(prep.layout)))
    try:
        while any(p.poll() is None for p in procs):
            progress.update(counters)
            time.sleep(0.5)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        progress.update(counters, force=True)
        progress.close()
        os.unlink(cfg_path)
    codes = [p.returncode for p in procs]
    if all(c == EXIT_OK for c in codes):
        code = EXIT_OK
    elif EXIT_PREEMPTED in codes or any(c < 0 for c in codes):
        code = EXIT_PREEMPTED
    elif all(c in (EXIT_OK, EXIT_INCOMPLETE) for c in codes):
        code = EXIT_INCOMPLETE
    else:
        code = EXIT_RUNTIME
    done = len(done_units(prep.layout))
    return RunResult(code, len(prep.units), done, [], 0, 0, counters.elapsed, counters.elapsed,
                     summary=f"--gpus {n}: worker exit codes {codes}; {done}/{len(prep.units)} units done")
