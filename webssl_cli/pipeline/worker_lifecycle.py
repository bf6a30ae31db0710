"""DataLoader workers from start to end: what each worker sets up (signals, dying with its
parent) and how the main process stops them all within a few seconds, whatever they are
doing (a stalled read included)."""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

from ..preprocess import worker_init as decode_setup

ASK_GRACE = 0.5      # seconds at close for workers to leave by themselves (idle ones do)
STOP_GRACE = 2.5     # then seconds for them to stop on STOP_REQUEST (readers' cleanup: 2 s)
KILL_WAIT = 2.0      # then seconds for SIGKILLed ones to be reaped
PARENT_POLL = 0.5    # seconds between an idle worker's checks that its parent still lives
STOP_REQUEST = signal.SIGUSR2   # main process -> worker: abandon the part, clean up, leave
_PR_SET_PDEATHSIG = 1


class WorkerStop(KeyboardInterrupt):
    """Raised in a worker by :data:`STOP_REQUEST`. A KeyboardInterrupt so that no
    ``except Exception`` in the readers keeps it, their ``finally``/``except BaseException``
    cleanup runs on the way out (a ``pipe:`` command's process group is killed), and torch's
    worker loop, which catches KeyboardInterrupt, ends quietly."""


def worker_init(_: int) -> None:
    """Runs in each DataLoader worker before it reads anything.

    SIGINT and SIGTERM are ignored: a terminal's Ctrl-C, or a scheduler's SIGTERM to the whole
    process group, also reaches the workers, and only the main process may decide how the run
    stops (release claims, exit 4). The main process stops the workers itself
    (:func:`stop_workers`), and a worker whose main process died leaves too (kill -9 of the
    main process, or its exit at once on a second signal) instead of living on as an orphan.
    Then the decoding setup (``preprocess.worker_init``: one torch thread per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(STOP_REQUEST, _on_stop_request)
    decode_setup()
    from torch.utils.data import get_worker_info
    die_with_parent(get_worker_info().dataset.parent_pid)


def _on_stop_request(_signum, _frame) -> None:
    """STOP_REQUEST in a worker: raise WorkerStop wherever the worker is (a blocked read is
    interrupted). Once only, so the cleanup is not cut short by a second request; and an
    alarm (SIGALRM's default action ends the process) makes sure a cleanup that hangs, or a
    worker that will not get back to Python code, still ends when no parent is left to
    SIGKILL it."""
    signal.signal(STOP_REQUEST, signal.SIG_IGN)
    signal.alarm(int(STOP_GRACE) + 2)
    raise WorkerStop()


def die_with_parent(parent_pid: int, sig: int = STOP_REQUEST) -> None:
    """Linux: have the kernel send ``sig`` to this worker when its parent dies, wherever
    it is blocked (a stalled read included). Strictly the parent is the thread that started
    the worker: the one that created the :class:`BatchSource`, which also closes it.
    Elsewhere, or if prctl is refused, ``WorkQueueDataset`` polls for the parent while it
    waits for work instead (a worker blocked in a read then leaves only when the read ends)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(sig), ctypes.c_ulong(0),
                       ctypes.c_ulong(0), ctypes.c_ulong(0))
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:    # the parent died before prctl took effect
        os._exit(0)


def stop_workers(it) -> None:
    """Bounded shutdown of a DataLoader iterator's workers: ask them to leave; after
    ASK_GRACE seconds send STOP_REQUEST to those still there; after STOP_GRACE more, SIGKILL
    the rest; then let torch tidy up its queues and threads.

    Torch's own shutdown waits 5 s per worker and then sends SIGTERM, which the workers
    ignore (:func:`worker_init`), and at interpreter exit multiprocessing waits for them without
    limit: a worker blocked on a stalled input (a ``pipe:`` command that sleeps, a trickling
    server) kept a stopped run alive until that read ended. Nothing a worker holds is worth
    waiting for: the runner abandons the units in flight and releases their claims, and the
    next run redoes them. STOP_REQUEST comes before SIGKILL so that the readers' cleanup runs
    (a killed worker would leave its ``pipe:`` command running). Workers stopped here never
    report: their pids leave torch's SIGCHLD check first, and the pin-memory thread (CUDA)
    stops before a worker can die in the middle of a message it is reading."""
    workers = list(it._workers)
    try:
        _forget_worker_pids(it)
        _stop_pin_thread(it)
        it._workers_done_event.set()
        for i, active in enumerate(it._workers_status):
            if active:
                it._mark_worker_as_unavailable(i, shutdown=True)   # a None on its index queue
        _join_all(workers, ASK_GRACE)
        _signal_alive(workers, STOP_REQUEST)
        _join_all(workers, STOP_GRACE)
        _signal_alive(workers, signal.SIGKILL)
        _join_all(workers, KILL_WAIT)
        it._shutdown_workers()   # quick now; marks the iterator shut down (__del__: no-op)
    except BaseException:
        # interrupted (a second stop signal raises here under the Python API): leave no
        # worker behind, since one blocked in a read would hold up the interpreter's exit
        _signal_alive(workers, STOP_REQUEST)
        raise


def _signal_alive(workers: list, sig: int) -> None:
    """Send ``sig`` to the workers not yet reaped (a pid is not reused before it is)."""
    for w in workers:
        if w.is_alive():
            try:
                os.kill(w.pid, sig)
            except ProcessLookupError:
                pass


def _join_all(workers: list, seconds: float) -> None:
    """Join every worker, all within one deadline (not ``seconds`` per worker)."""
    deadline = time.monotonic() + seconds
    for w in workers:
        w.join(timeout=max(0.0, deadline - time.monotonic()))


def _stop_pin_thread(it) -> None:
    """First, as in torch's own shutdown (whose join is then instant): the thread checks its
    done event at least every 5 s, and gets a message at once here."""
    thread = getattr(it, "_pin_memory_thread", None)
    if thread is not None and thread.is_alive():
        it._pin_memory_thread_done_event.set()
        it._worker_result_queue.put((None, None))
        thread.join(timeout=5.0)


def _forget_worker_pids(it) -> None:
    """Withdraw the workers from torch's SIGCHLD handler, which would otherwise raise
    "DataLoader worker ... is killed by signal" in the main thread for the workers killed
    here on purpose."""
    from torch.utils.data import _utils
    if it._worker_pids_set:
        _utils.signal_handling._remove_worker_pids(id(it))
        it._worker_pids_set = False
