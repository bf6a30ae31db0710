"""`--decode gpu` with the workers' help: the share of the GPU-decodable JPEGs that the
DataLoader workers decode on the CPU instead of sending them to the decode thread.

Measured on an H100 (benchmarks/results/gpu-2026-11-27-h100.md): dino300m end to end with
every JPEG on the decode thread ran at 0.82x of the model alone, the decode thread busy 97% of
the time, while 14 workers did little more than read tar members. With a share ``s`` of the
JPEGs decoded by the workers (exactly as ``--decode cpu`` decodes them) and the rest by nvJPEG,
both sides work at once.

``--cpu-share auto`` (the default) puts ``s`` where both sides need the same time per image,
from what they measured so far (:class:`ShareEstimate`, :func:`balanced_share`). A fixed
``--cpu-share`` (0: every GPU-decodable JPEG to the GPU, as before; 1: none) is kept as given.
The share lives in one shared double that the main process writes and the forked workers
read; each worker turns it into decisions with an accumulator (:class:`CpuPick`): a share of
0.25 decodes exactly every fourth eligible JPEG on the CPU, no randomness.
"""
from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass

DECAY = 0.95          # per observation: the estimate follows the last ~20 batches
# the prior before anything was measured: a worker decodes a typical web JPEG in ~8 ms, the
# decode thread takes ~0.5 ms per JPEG; balanced_share of those with W workers
PRIOR_CPU_S, PRIOR_THREAD_S = 8e-3, 0.5e-3


class SharedShare:
    """The share, readable by workers forked after it was made (``value``)."""

    def __init__(self, value: float) -> None:
        self._v = mp.get_context("fork").Value("d", value, lock=False)

    @property
    def value(self) -> float:
        return self._v.value

    @value.setter
    def value(self, v: float) -> None:
        self._v.value = v


class CpuPick:
    """In a worker: which eligible JPEGs to decode here (an accumulator over the share)."""

    def __init__(self, share: SharedShare | None) -> None:
        self.share, self.acc = share, 0.0

    def __call__(self) -> bool:
        if self.share is None:
            return False
        self.acc += min(max(self.share.value, 0.0), 1.0)
        if self.acc >= 1.0 - 1e-9:
            self.acc -= 1.0
            return True
        return False


def balanced_share(workers: int, read_s: float, cpu_s: float, thread_s: float,
                   eligible: float, forced: float) -> float:
    """The share of eligible JPEGs to decode in the workers so that the workers and the decode
    thread need the same time per image. Per image, on average: the workers read it
    (``read_s``) and decode the ``forced`` fraction (not GPU-decodable) plus ``eligible * s``
    (``cpu_s`` each), spread over ``workers`` processes; the decode thread decodes
    ``eligible * (1 - s)`` (``thread_s`` each). Equal at
    ``s = (W g e - R - c f) / (e (c + W g))``, clamped to [0, 1]."""
    if workers <= 0 or eligible <= 0:
        return 0.0
    w_g = workers * thread_s
    s = (w_g * eligible - read_s - cpu_s * forced) / (eligible * (cpu_s + w_g))
    return min(max(s, 0.0), 1.0)


def prior_share(workers: int) -> float:
    return balanced_share(workers, 0.0, PRIOR_CPU_S, PRIOR_THREAD_S, 1.0, 0.0)


@dataclass
class _Sums:
    """Decayed sums of what was measured (seconds and counts)."""
    images: float = 0.0        # images the workers read
    busy: float = 0.0          # workers' busy seconds for them (reading and CPU decoding)
    cpu_images: float = 0.0    # of them decoded on the CPU (forced or picked)
    cpu_seconds: float = 0.0
    eligible: float = 0.0      # of them GPU-decodable
    picked: float = 0.0        # of those decoded on the CPU all the same
    raw: float = 0.0           # JPEGs the decode thread decoded
    thread_seconds: float = 0.0


class ShareEstimate:
    """In the main process: ``--cpu-share auto``'s running estimate, written to ``share``.

    Observations are the workers' pieces (their busy and CPU-decode seconds, counts) and the
    decode thread's batches (its seconds). The decode thread's first batch is skipped: it pays
    nvJPEG's start-up (about a second on an H100), which would push the share to the CPU for
    the next few seconds. Totals (not decayed) give the share actually picked, for the summary.
    """

    def __init__(self, workers: int, fixed: float | None) -> None:
        self.workers, self.fixed = workers, fixed
        self.busy = workers                  # workers with a part to read (busy_parts)
        start = fixed if fixed is not None else (prior_share(workers) if workers else 0.0)
        self.share = SharedShare(start)
        self.s = _Sums()
        self.thread_batches = 0
        self.total_eligible = 0
        self.total_picked = 0

    def on_piece(self, b) -> None:
        """A worker's piece (``loader.Batch``): its samples, busy and CPU-decode seconds,
        GPU-decodable JPEGs and how many of those it decoded itself. End markers carry none."""
        if b.end:
            return
        self.observe(len(b.indices) + len(b.raw_sizes) + len(b.failures), b.decode_seconds,
                     b.cpu_images, b.cpu_seconds, b.gpu_eligible, b.cpu_picked)

    def observe(self, images: int, busy: float, cpu_images: int, cpu_seconds: float,
                eligible: int, picked: int) -> None:
        self.total_eligible += eligible
        self.total_picked += picked
        s = self.s
        s.images = s.images * DECAY + images
        s.busy = s.busy * DECAY + busy
        s.cpu_images = s.cpu_images * DECAY + cpu_images
        s.cpu_seconds = s.cpu_seconds * DECAY + cpu_seconds
        s.eligible = s.eligible * DECAY + eligible
        s.picked = s.picked * DECAY + picked
        self._update()

    def busy_parts(self, parts: int) -> None:
        """Parts submitted to the workers and not finished: at a run's tail (or with fewer
        units than workers) fewer workers have work, and those few must keep less for
        themselves, or the tail waits on them while the decode thread idles."""
        self.busy = max(1, min(self.workers, parts)) if self.workers else 0

    def on_thread_batch(self, raw: int, seconds: float) -> None:
        self.thread_batches += 1
        if self.thread_batches == 1 or raw == 0:
            return
        s = self.s
        s.raw = s.raw * DECAY + raw
        s.thread_seconds = s.thread_seconds * DECAY + seconds
        self._update()

    def estimate(self) -> float | None:
        """The balanced share from the measurements so far; None until both the workers' CPU
        decoding and the decode thread have been measured."""
        s = self.s
        if s.images <= 0 or s.cpu_images <= 0 or s.raw <= 0:
            return None
        cpu_s = s.cpu_seconds / s.cpu_images
        read_s = max(s.busy - s.cpu_seconds, 0.0) / s.images
        eligible = s.eligible / s.images
        forced = max(s.cpu_images - s.picked, 0.0) / s.images
        return balanced_share(self.busy, read_s, cpu_s, s.thread_seconds / s.raw,
                              eligible, forced)

    def _update(self) -> None:
        if self.fixed is not None or self.workers <= 0:
            return
        est = self.estimate()
        if est is not None:
            # never quite 0 or 1 while estimating: both sides keep being measured
            self.share.value = min(max(est, 0.02), 0.98)

    def picked_fraction(self) -> float | None:
        """The share of the GPU-decodable JPEGs decoded on the CPU over the whole run; None
        when there were none."""
        return self.total_picked / self.total_eligible if self.total_eligible else None
