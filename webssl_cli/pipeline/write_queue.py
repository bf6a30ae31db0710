"""Units' writes on one background thread, with a bound on how many wait.

A finished unit holds all its features in memory until it is written. When the output
filesystem is slower than the model, an unbounded queue would grow until the host runs out
of memory. Here at most ``ahead`` finished units wait behind the one being written; past that
the main loop blocks in :meth:`submit` (the run's summary counts it as waiting for writes),
which slows the model down to the disk's pace.

Given a byte ``allowance``, small writes may queue past ``ahead`` as long as the features of
the writes not yet finished stay within it (and at most ``max_queued`` writes are queued):
a unit of a few MB finishes every second or two, and a count bound alone makes the model
wait on any stall of the disk (an fsync behind other writeback, a shared filesystem) longer
than a few units' time, though those units hold almost no memory. Without an allowance the
bound is the count alone, as before.

A write that failed (disk full, permission denied) is raised on the main thread at the next
submit or drain, not at the end of the run, so a long run stops at the first failed write.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import time
from collections import deque
from collections.abc import Callable


MAX_QUEUED = 32   # writes queued (the running one included) however small they are
GRACE_WRITE_BYTES = 64 << 20   # on a stop, queued writes this big or smaller may still run


class WriteQueue:
    def __init__(self, ahead: int = 2, name: str = "webssl-writer",
                 allowance: int | None = None, max_queued: int = MAX_QUEUED) -> None:
        """``allowance``: bytes (``submit``'s ``nbytes``) the writes not yet finished may
        hold before ``submit`` blocks past ``ahead``; None: block past ``ahead`` always."""
        self.ahead = ahead
        self.allowance = allowance
        self.max_queued = max_queued
        self.pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.futures: deque[cf.Future] = deque()
        # beside each future: (bytes it holds in memory, bytes it writes, spilled included)
        self.sizes: deque[tuple[int, int]] = deque()
        self.wait_seconds = 0.0      # main thread blocked on a full queue
        self.drain_seconds = 0.0     # main thread waiting in drain (the last writes)

    def __len__(self) -> int:
        return len(self.futures)

    @property
    def queued_bytes(self) -> int:
        """Bytes of the writes not yet finished (a write may finish at any moment on the
        writer thread, whether or not it was reaped)."""
        return sum(n for f, (n, _) in zip(self.futures, self.sizes) if not f.done())

    def submit(self, fn: Callable[[], None],
               waiting: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
               track: list[cf.Future] | None = None, nbytes: int = 0,
               cost: int | None = None) -> None:
        """Queue ``fn`` (its future appended to ``track`` at once), which holds ``nbytes`` in
        memory until it finished and writes ``cost`` bytes (default ``nbytes``); block (inside ``waiting()``, so a stop signal can
        interrupt) while more than ``ahead`` writes wait behind the running one and they are
        over the byte allowance or more than ``max_queued``. Raises a failed write's error."""
        self.reap()
        future = self.pool.submit(fn)
        self.futures.append(future)
        self.sizes.append((nbytes, nbytes if cost is None else cost))
        if track is not None:
            track.append(future)
        while self._full():
            self._wait_oldest(waiting)

    def _full(self) -> bool:
        if len(self.futures) <= self.ahead + 1:
            return False
        if self.allowance is None or len(self.futures) > self.max_queued:
            return True
        return self.queued_bytes > self.allowance

    def drain(self, waiting: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> None:
        """Wait for every queued write; raises the first failed one's error."""
        while self.futures:
            self._wait_oldest(waiting, drain=True)

    def reap(self) -> None:
        """Drop finished writes from the front of the queue, raising a failed one's error."""
        while self.futures and self.futures[0].done():
            self.sizes.popleft()
            self.futures.popleft().result()

    def _wait_oldest(self, waiting, drain: bool = False) -> None:
        t0 = time.perf_counter()
        try:
            with waiting():
                cf.wait([self.futures[0]])
        finally:
            if drain:
                self.drain_seconds += time.perf_counter() - t0
            else:
                self.wait_seconds += time.perf_counter() - t0
        self.reap()

    def abandon(self) -> None:
        """Drop the queued writes without waiting (a cleanup cut short by a second stop
        signal); a write already running finishes in its thread, its commit all or nothing."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    def close(self, cancel: bool, grace: float = 0.0) -> BaseException | None:
        """End the thread. With ``cancel`` (a stop signal), queued writes of at most
        ``GRACE_WRITE_BYTES`` still run for up to ``grace`` seconds, then those not started
        are dropped, and bigger ones at once (a stopped run's units are redone by the rerun;
        with the byte allowance up to ``max_queued`` small finished units may be queued,
        minutes of model time at stake). A write already running always finishes, so the
        stop waits at most for it, the grace and one write of at most ``GRACE_WRITE_BYTES``.
        Returns the first error of a write that ran and failed."""
        if cancel and grace > 0:
            for f, (_, cost) in zip(self.futures, self.sizes):
                if cost > GRACE_WRITE_BYTES:
                    f.cancel()          # no-op once it runs (it then finishes, as always)
            deadline = time.monotonic() + grace
            for f in list(self.futures):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                cf.wait([f], timeout=left)
        self.pool.shutdown(wait=True, cancel_futures=cancel)
        for f in self.futures:
            if not f.cancelled() and f.exception() is not None:
                return f.exception()
        return None
