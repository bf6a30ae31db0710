"""Keeping the features held in host memory under a budget by spilling units to disk.

A unit's rows wait in memory until the whole unit is written (one output file per unit).
With ``patches`` on big tar shards that is GiBs per unit, and up to ``--num-workers`` + 1
units are in flight: the host ran out of memory. Now, whenever the units in flight hold
more than the budget, the one holding the most hands its rows to a spill thread, which
appends them to the unit's spool (``spool.UnitSpool``) and only then frees them. Spills have
a queue and a thread of their own, so they never wait behind a big unit's write (minutes for
a shard of patches); the queue's bound makes a disk slower than the model slow the model
instead of filling memory. A unit's write (or its removal, if given up) first waits for the
spills queued for it. Units written from their spool produce the same files as units
written from memory.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

from ..errors import WebsslError
from ..store.layout import OutputLayout
from .held_memory import HeldFeatures
from .spool import UnitSpool
from .unit_writer import free_space
from .unit_state import UnitState
from .write_queue import WriteQueue

SPILL_AHEAD = 2       # spills queued behind the running one before the main loop waits
MIN_AUTO_BUDGET = 256 << 20
MAX_AUTO_BUDGET = 4 << 30


def spill_budget(configured_mib: int | None, available: int | None) -> int:
    """Bytes of features held in memory before spilling: ``--feature-memory`` (MiB), else a
    sixteenth of the memory available at the start (several ranks may share the node),
    256 MiB..4 GiB; 1 GiB where the available memory is unknown."""
    if configured_mib is not None:
        return configured_mib << 20
    if available is None:
        return 1 << 30
    return max(MIN_AUTO_BUDGET, min(MAX_AUTO_BUDGET, available // 16))


class Spiller:
    def __init__(self, layout: OutputLayout, held: HeldFeatures, budget: int,
                 waiting: Callable[[], contextlib.AbstractContextManager]) -> None:
        self.layout, self.held, self.budget = layout, held, budget
        self.queue = WriteQueue(SPILL_AHEAD, name="webssl-spill")
        self.waiting = waiting               # the stop flag's: a signal may end a full wait
        self.spools: dict[str, UnitSpool] = {}   # spools not yet removed, by unit id
        self.spilled_bytes = 0               # on disk: read once the spill thread ended

    def check(self, inflight: dict[int, UnitState]) -> None:
        """On the main thread, after rows were added: while the units in flight hold more
        than the budget, spill the largest. Rows already on their way to disk (queued spills,
        finished units queued for writing) do not count: their queues bound them, and
        counting them would spill every batch while a big unit is written."""
        held = sum(s.nbytes for s in inflight.values())
        while held > self.budget:
            st = max(inflight.values(), key=lambda s: s.nbytes)
            held -= st.nbytes
            self.spill(st)

    def spill(self, st: UnitState) -> None:
        if st.spool is None:
            st.spool = self.spools[st.unit.id] = UnitSpool(self.layout, st.unit.id)
        chunks, nbytes = st.detach()
        spool = st.spool

        def write() -> None:
            try:
                spool.append(chunks)
                self.spilled_bytes += nbytes       # (only this thread adds to it)
            except OSError as exc:
                raise WebsslError(
                    f"spilling the features of unit {st.unit.id} ({st.unit.name}) under "
                    f"{self.layout.staging_dir} failed: {exc}{free_space(self.layout.out_dir)}. "
                    "Check free space and quota of --out, or raise --feature-memory; finished "
                    "units are kept, rerun the same command to resume.") from exc
            finally:
                self.held.release(nbytes)
        self.queue.submit(write, self.waiting, track=st.spills)

    @staticmethod
    def settle(st: UnitState) -> None:
        """On the writer thread, before the unit is written: wait for the spills queued for
        it; a failed or cancelled one fails the write with its error. (``Future.exception``
        waits, and wakes when a queue shut down with cancel_futures cancels the future;
        ``concurrent.futures.wait`` does not: CPython issue 92001.)"""
        for f in st.spills:
            error = f.exception()          # raises CancelledError for a cancelled spill
            if error is not None:
                raise error

    def discard(self, st: UnitState, writes: WriteQueue) -> None:
        """The unit was given up: remove its spool on the writer thread, once the spills
        queued for it have run (or were cancelled)."""
        if st.spool is not None:
            def remove() -> None:
                with contextlib.suppress(Exception):   # its failure was raised already
                    self.settle(st)
                self.remove(st.spool)
            writes.submit(remove, self.waiting)

    def remove(self, spool: UnitSpool) -> None:
        spool.remove()
        self.spools.pop(spool.unit_id, None)

    def close(self, cancel: bool) -> BaseException | None:
        """End the spill thread (dropping queued spills if ``cancel``: their units are redone),
        then remove the spools of units never written. Call after the writer thread ended
        (a running write waits for its unit's spills). Returns a failed spill's error."""
        error = self.queue.close(cancel=cancel)
        for spool in list(self.spools.values()):
            self.remove(spool)
        return error
