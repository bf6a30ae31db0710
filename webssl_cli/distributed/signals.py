"""Preemption: SIGTERM / SIGINT / SIGUSR1 stop the run; a second signal stops it at once.

The first signal raises :class:`Preempted` in the main thread when it is blocked waiting
(for the data loader or a write), or is noticed at the next check otherwise; the runner then abandons in-flight units without visible partial files,
releases their claims and exits with EXIT_PREEMPTED (4) so `--requeue` jobs resume cleanly.

What a second signal does is the process's :class:`StopPolicy`: a command (``webssl``, a
``--gpus`` worker, a torchrun/srun rank) exits at once with 4; the Python API
(``webssl_cli.extract``, :func:`api_policy`) raises at once instead, so that the caller's
interpreter (a Jupyter kernel) lives on and its ``finally`` blocks run.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import EXIT_PREEMPTED, Preempted, StopSignal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopFlag:
    """Set by the first stop signal. The handler raises :class:`Preempted` only while the
    main thread is ``interruptible`` (blocked waiting for data or a write); elsewhere (claiming,
    bookkeeping) it just sets the flag and the runner stops at its next check, so no claim or
    unit is ever half-registered."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.interruptible = False

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def error(self) -> Preempted:
        return Preempted(f"stopped by {self.signal_name}; finished units are kept, rerun the "
                         "same command to resume")

    def check(self) -> None:
        if self:
            raise self.error()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Mark a blocking wait during which a signal may interrupt at once."""
        self.check()
        self.interruptible = True
        try:
            yield
        finally:
            self.interruptible = False


@dataclass
class StopPolicy:
    """How the runs of this process treat stop signals. ``api`` False (a command): a second
    signal exits the process at once with 4. ``api`` True (``webssl_cli.extract``): a second
    signal raises :meth:`interruption` at once. ``first`` names the first stop signal a run
    received under this policy (the API raises KeyboardInterrupt after a SIGINT)."""

    api: bool = False
    first: str | None = None
    launcher: int | None = None    # a --gpus worker: its launcher's pid (see second())

    def note(self, name: str) -> None:
        if self.first is None:
            self.first = name

    def hint(self) -> str:
        return "send again to stop at once" if self.api else "send again to exit at once"

    def second(self, name: str, prefix: str) -> None:
        """A second stop signal in a run: exit now (command) or raise (API). Not a SIGTERM
        to a ``--gpus`` worker whose launcher is gone: the kernel's parent-death signal
        (``die_with_parent``) can come twice when a threaded launcher dies, and the worker
        must still stop cleanly (release its claims)."""
        if name == "SIGTERM" and self.launcher is not None and os.getppid() != self.launcher:
            print(f"{prefix} SIGTERM again after the launcher died: still stopping after "
                  "cleanup (send SIGINT to exit at once)", file=sys.stderr, flush=True)
            return
        if not self.api:
            print(f"{prefix} second {name}: exiting now", file=sys.stderr, flush=True)
            os._exit(EXIT_PREEMPTED)
        print(f"{prefix} second {name}: stopping now", file=sys.stderr, flush=True)
        raise self.interruption(name)

    @staticmethod
    def interruption(name: str) -> BaseException:
        """What an API caller gets for a stop: KeyboardInterrupt for SIGINT (Python's own
        Ctrl-C), :class:`StopSignal` for the others."""
        text = f"stopped by {name}; finished units are kept, rerun the same call to resume"
        return KeyboardInterrupt(text) if name == "SIGINT" else StopSignal(text)


_policy = StopPolicy()


def current_policy() -> StopPolicy:
    """The policy runs in this process follow now (a command's unless :func:`api_policy`)."""
    return _policy


@contextlib.contextmanager
def api_policy() -> Iterator[StopPolicy]:
    """The Python API's policy for the duration of a call. Off the main thread no handlers
    are installed: the caller's policy stays, and a fresh one (never signalled) is yielded."""
    global _policy
    fresh = StopPolicy(api=True)
    if threading.current_thread() is not threading.main_thread():
        yield fresh
        return
    saved, _policy = _policy, fresh
    try:
        yield fresh
    finally:
        _policy = saved


@contextlib.contextmanager
def preemption_handlers(flag: StopFlag, prefix: str = "") -> Iterator[StopFlag]:
    def handler(signum, _frame):
        name = signal.Signals(signum).name
        policy = current_policy()
        if flag.signal_name is not None:
            policy.second(name, prefix)       # exits or raises, unless it ignores a repeat
            return
        flag.signal_name = name
        policy.note(name)
        print(f"{prefix} {name} received: stopping after cleanup ({policy.hint()})",
              file=sys.stderr, flush=True)
        if flag.interruptible:
            flag.interruptible = False
            raise flag.error()

    with installed(handler):
        yield flag


@contextlib.contextmanager
def installed(handler) -> Iterator[None]:
    """``handler`` for every stop signal, the previous ones restored on exit. Off the main
    thread (``webssl_cli.extract`` called from a thread) Python allows no handlers: nothing
    is installed and the caller's own signal handling stays in charge."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _raise_stop(signum, _frame):
    name = signal.Signals(signum).name
    raise StopSignal(f"stopped by {name} before it finished; rerun the same command (an "
                     "extraction resumes where it stopped, a download where it was cut)")


@contextlib.contextmanager
def command_handlers() -> Iterator[None]:
    """For a whole command (``webssl ...``, a ``--gpus`` worker): a stop signal that comes
    before a run installs its own handlers (imports, planning, weights) ends the command with
    :class:`StopSignal` (exit 4) instead of the default 130/143 or a killed process."""
    with installed(_raise_stop):
        yield


def ignore_stop_signals() -> None:
    """After a command has finished: a late stop signal must not turn its exit code into a
    signal death while the interpreter shuts down."""
    if threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
