"""Units' writes on one background thread, with a bound on how many wait.

A finished unit holds all its features in memory until it is written. When the output
filesystem is slower than the model, an unbounded queue would grow until the host runs out
of memory. Here at most ``ahead`` finished units wait behind the one being written; past that
the main loop blocks in :meth:`submit` (the run's summary counts it as waiting for writes),
which slows the model down to the disk's pace.

A write that failed (disk full, permission denied) is raised on the main thread at the next
submit or drain, not at the end of the run, so a long run stops at the first failed write.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import time
from collections import deque
from collections.abc import Callable


class WriteQueue:
    def __init__(self, ahead: int = 2, name: str = "webssl-writer") -> None:
        self.ahead = ahead
        self.pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.futures: deque[cf.Future] = deque()
        self.wait_seconds = 0.0      # main thread blocked on a full queue or on the drain

    def __len__(self) -> int:
        return len(self.futures)

    def submit(self, fn: Callable[[], None],
               waiting: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
               track: list[cf.Future] | None = None) -> None:
        """Queue ``fn`` (its future appended to ``track`` at once); block (inside
        ``waiting()``, so a stop signal can interrupt) while more than ``ahead`` writes wait
        behind the running one. Raises a failed write's error."""
        self.reap()
        future = self.pool.submit(fn)
        self.futures.append(future)
        if track is not None:
            track.append(future)
        while len(self.futures) > self.ahead + 1:
            self._wait_oldest(waiting)

    def drain(self, waiting: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> None:
        """Wait for every queued write; raises the first failed one's error."""
        while self.futures:
            self._wait_oldest(waiting)

    def reap(self) -> None:
        """Drop finished writes from the front of the queue, raising a failed one's error."""
        while self.futures and self.futures[0].done():
            self.futures.popleft().result()

    def _wait_oldest(self, waiting) -> None:
        t0 = time.perf_counter()
        try:
            with waiting():
                cf.wait([self.futures[0]])
        finally:
            self.wait_seconds += time.perf_counter() - t0
        self.reap()

    def abandon(self) -> None:
        """Drop the queued writes without waiting (a cleanup cut short by a second stop
        signal); a write already running finishes in its thread, its commit all or nothing."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    def close(self, cancel: bool) -> BaseException | None:
        """End the thread (dropping queued writes if ``cancel``: a stopped run's units are
        redone by the rerun). Returns the first error of a write that ran and failed."""
        self.pool.shutdown(wait=True, cancel_futures=cancel)
        for f in self.futures:
            if not f.cancelled() and f.exception() is not None:
                return f.exception()
        return None
