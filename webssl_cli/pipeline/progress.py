"""Progress reporting: a rich bar on a terminal, plain lines every N seconds otherwise.

Totals come from the done-records on the shared filesystem, so rank 0 (or the `--gpus`
parent) shows the whole job, not only its own share.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from .others import units


def log(rank, msg: str) -> None:
    """One line on stderr, prefixed with the rank (``rank.prefix``) in a multi-rank job."""
    print(f"{rank.prefix} {msg}".strip(), file=sys.stderr, flush=True)


@dataclass
class Counters:
    images: int = 0                  # rows through the model (the throughput figures)
    images_written: int = 0          # rows of the units this process committed (writer thread)
    failures: int = 0
    units_done: int = 0
    units_failed: int = 0
    read_seconds: float = 0.0        # summed over workers (decode+read time)
    decode_thread_seconds: float = 0.0   # --decode gpu: the decode thread's busy time
    wait_seconds: float = 0.0        # main loop waiting for batches
    others_wait_seconds: float = 0.0 # nothing to claim: waiting for units other ranks hold
    model_seconds: float = 0.0
    write_seconds: float = 0.0
    write_wait_seconds: float = 0.0  # main loop blocked on a full write queue
    write_drain_seconds: float = 0.0 # waiting for the last writes (drains): no model time lost
    peak_feature_bytes: int = 0      # features in host memory waiting for their unit's write
    spilled_bytes: int = 0           # features spilled to disk to stay under the budget
    cpu_share: float | None = None   # --decode gpu: GPU-decodable JPEGs decoded on the CPU
    cpu_share_mode: str = "auto"     # --cpu-share as given
    started: float = field(default_factory=time.perf_counter)
    loop_started: float | None = None    # first batch requested (setup and model load excluded)
    first_batch: float | None = None     # seconds from loop start to the first model batch
    streamed: float | None = None        # every batch's features back in host memory
    others_wait_streamed: float = 0.0    # others_wait_seconds when streamed was last marked

    def mark_streamed(self) -> None:
        self.streamed = time.perf_counter()
        self.others_wait_streamed = self.others_wait_seconds

    @property
    def steady_seconds(self) -> float:
        """From the first model batch to the last batch's features in host memory: the rate
        over this window is what a long run sustains (worker start-up excluded)."""
        if self.loop_started is None or self.first_batch is None:
            return 0.0
        if self.streamed is None:
            end, waited = time.perf_counter(), self.others_wait_seconds
        else:
            end, waited = self.streamed, self.others_wait_streamed
        return max(end - self.loop_started - self.first_batch - waited, 0.0)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def loop_seconds(self) -> float:
        return time.perf_counter() - (self.loop_started or self.started)


class Progress:
    """``update()`` is cheap; it redraws or prints at most every ``every`` seconds.

    ``limit`` (--limit-units) bounds the units this run will do, so the eta counts those only.
    """

    def __init__(self, units_total: int, units_done_before: int, prefix: str = "",
                 every: float = 30.0, enabled: bool = True, done_counter=None,
                 limit: int | None = None) -> None:
        self.total, self.before, self.prefix = units_total, units_done_before, prefix
        self.every, self.enabled, self.limit = every, enabled, limit
        self.done_counter = done_counter          # callable -> units done in the whole job
        self.tty = enabled and sys.stderr.isatty()
        self._last = 0.0
        self._bar = None
        if self.tty:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("units"),
                                     TextColumn("{task.fields[rate]:.1f} img/s"),
                                     TextColumn("fail {task.fields[fail]}"),
                                     TimeElapsedColumn(), TimeRemainingColumn(),
                                     transient=False)
            self._bar.start()
            self._task = self._bar.add_task(f"{prefix} extract".strip(), total=units_total,
                                            completed=units_done_before, rate=0.0, fail=0)

    def update(self, c: Counters, force: bool = False, waiting: float | None = None,
               final: bool = False) -> None:
        """``waiting``: seconds the current wait for input has lasted (None: not waiting),
        so that a stalled input is told from a hang. ``final``: the line after the run
        ended, which has no eta."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < (0.5 if self.tty else self.every):
            return
        self._last = now
        done = self.done_counter() if self.done_counter else self.before + c.units_done
        rate = c.images / max(c.loop_seconds, 1e-9)
        wait = f", waiting for input for {waiting:.0f} s" if waiting is not None else ""
        if self._bar is not None:
            desc = f"{self.prefix} extract{wait.replace(',', ' -', 1)}".strip()
            self._bar.update(self._task, completed=done, rate=rate, fail=c.failures,
                             description=desc)
            return
        eta = "" if final else self.eta(c, done)
        print(f"{self.prefix} units {done}/{self.total}, images {c.images} processed "
              f"({rate:.1f}/s), {c.images_written} written, failed samples {c.failures}, "
              f"failed units {c.units_failed}{eta}{wait}".strip(), file=sys.stderr, flush=True)

    def eta(self, c: Counters, done: int) -> str:
        """At this process's pace, the units left: not done and not given up here, and with
        --limit-units no more than this run still has to do."""
        left = self.total - done - c.units_failed
        if self.limit is not None:
            left = min(left, self.limit - c.units_done - c.units_failed)
        if not c.units_done or left <= 0:
            return ""
        return f", eta {left * c.elapsed / c.units_done / 60:.1f} min"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def summary(c: Counters, workers: int, cuda: bool = False) -> str:
    """The end-of-run line. ``cuda``: the model ran on a CUDA device, where ``--decode gpu``
    can relieve the input pipeline (it is refused elsewhere, so it is only suggested here)."""
    wall = max(c.loop_seconds - c.others_wait_seconds, 1e-9)
    read_wall = c.read_seconds / max(workers, 1)
    parts = {"reading/decoding": read_wall, "model": c.model_seconds, "writing": c.write_seconds}
    if c.decode_thread_seconds:
        parts["GPU decode thread"] = c.decode_thread_seconds
    drained = (f" (and {c.write_drain_seconds:.1f}s for the last ones)"
               if c.write_drain_seconds >= 0.05 else "")
    shared = (f"; {c.cpu_share:.0%} of the GPU-decodable JPEGs decoded on the CPU "
              f"(--cpu-share {c.cpu_share_mode})" if c.cpu_share is not None else "")
    if c.images == 0:
        hint = "none to name: no image reached the model in this process"
    elif c.wait_seconds > 0.2 * wall and c.wait_seconds > c.model_seconds * 0.25:
        if c.decode_thread_seconds > 0.8 * wall:
            hint = ("the GPU decode thread is the bottleneck (busy "
                    f"{c.decode_thread_seconds:.1f}s of {wall:.1f}s; the model waited "
                    f"{c.wait_seconds:.1f}s): "
                    + ("raise --num-workers (with --cpu-share auto the workers then decode a "
                       "larger share)" if c.cpu_share_mode == "auto" else
                       "raise --cpu-share (the workers decode more)")
                    + " or use --decode cpu")
        else:
            gpu = " or use --decode gpu" if cuda and not c.decode_thread_seconds else ""
            if c.cpu_share is not None and c.cpu_share_mode != "auto":
                gpu = " or lower --cpu-share (the GPU then decodes more)"
            hint = ("the input pipeline is the bottleneck (the model waited "
                    f"{c.wait_seconds:.1f}s for data): raise --num-workers{gpu}")
    elif c.write_seconds > c.model_seconds or c.write_wait_seconds > 0.2 * wall:
        hint = "writing is the bottleneck: use a faster output filesystem or fewer features"
    else:
        hint = "the model is the bottleneck (as it should be)"
    times = ", ".join(f"{k} {v:.1f}s" for k, v in parts.items())
    steady = (f", {c.images / c.steady_seconds:.1f} img/s from it on"
              if c.steady_seconds > 0 else "")
    return (f"{c.images} images in {wall:.1f}s ({c.images / wall:.1f} img/s; "
            f"{c.elapsed - c.loop_seconds:.1f}s setup and model load before that; first model "
            f"batch after {c.first_batch or 0.0:.1f}s{steady}), {c.images_written} of them "
            f"written, {units(c.units_done)} done, {units(c.units_failed)} failed, "
            f"{c.failures} failed samples. Time: {times}, waiting for data "
            f"{c.wait_seconds:.1f}s, waiting for writes {c.write_wait_seconds:.1f}s{drained}"
            f"{shared}; features "
            f"held in memory at most {c.peak_feature_bytes / 2**20:.1f} MiB"
            + (f" ({c.spilled_bytes / 2**20:.1f} MiB spilled to disk to stay under "
               "--feature-memory)" if c.spilled_bytes else "")
            + f". Bottleneck: {hint}."
            + (f" Waited {c.others_wait_seconds:.1f}s (not counted above) for units other "
               "ranks held." if c.others_wait_seconds else "")
            + (f" WARNING: all {c.failures} samples read here failed; `webssl status` on the "
               "output folder lists them with the reasons." if c.failures and not c.images
               else ""))
