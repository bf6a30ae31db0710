"""``pipe:`` inputs: a shell command's stdout as a shard stream. The command runs in its own
session with default signal handling, and its whole process group is stopped when the
reader is done with it, so nothing it started in the background outlives the unit."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from .errors import StreamError

PIPE_KILL_GRACE_S = 2.0           # SIGTERM to a pipe: command's group, then SIGKILL
PIPE_DRAIN_IDLE_S = 2.0           # after the archive's end: silence that ends the wait for more


@contextmanager
def open_pipe(source: str) -> Iterator[BinaryIO]:
    command = source[len("pipe:"):]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=err,
                                bufsize=1 << 20, start_new_session=True,
                                preexec_fn=_default_signals)
        assert proc.stdout is not None
        try:
            try:
                yield proc.stdout   # type: ignore[misc]
            except Exception as exc:   # bad output: if the command failed, that is the news
                code = _wait_or_kill(proc, 2.0)
                if code not in (0, None, -signal.SIGKILL, -signal.SIGTERM):
                    raise StreamError(_exit_message(code, err)) from exc
                raise
            except BaseException:      # the consumer stopped early
                _wait_or_kill(proc, 0.0)
                raise
            whole = _drain(proc, PIPE_DRAIN_IDLE_S)   # padding after the end-of-archive marker
            proc.stdout.close()
            try:
                code = proc.wait(timeout=PIPE_DRAIN_IDLE_S)
            except subprocess.TimeoutExpired:   # the archive is whole; the command lingers
                code = 0
            if code in _BROKEN_PIPE and not whole:
                code = 0     # it wrote after we stopped reading: the archive was whole
            if code != 0:
                raise StreamError(_exit_message(code, err))
        finally:
            _kill_group(proc.pid, PIPE_KILL_GRACE_S)   # what the command left in the background


_BROKEN_PIPE = (128 + signal.SIGPIPE, -signal.SIGPIPE)   # died writing to a closed pipe


def _drain(proc: subprocess.Popen, idle_s: float) -> bool:
    """Read and drop what the command still writes after the consumer is done (the tar's
    padding) until end of file; True if it came. Bounded: a background child of the command
    that keeps stdout open, or a command that goes on running silently, would otherwise hold
    the unit forever. So it stops at the first short silence once the command (the shell)
    has exited, and after ``idle_s`` s of silence while it still runs."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    quiet_since = time.monotonic()
    while True:
        exited = proc.poll() is not None
        ready, _, _ = select.select([fd], [], [], 0.05 if exited else 0.25)
        if ready:
            if not os.read(fd, 1 << 20):
                return True
            quiet_since = time.monotonic()
        elif exited or time.monotonic() - quiet_since >= idle_s:
            return False


def _default_signals() -> None:
    """Runs in the ``pipe:`` command's process before exec: the DataLoader worker that starts
    it ignores SIGINT/SIGTERM (the parent handles stopping), and ignored signals stay ignored
    across exec; the command and its children must die of them, and of SIGPIPE when the
    reader is gone."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)


def _wait_or_kill(proc: subprocess.Popen, timeout: float) -> int | None:
    """The command's exit code if it ends within ``timeout`` s, else None after its whole
    process group (it runs in its own session) was killed: the shell's children too."""
    assert proc.stdout is not None
    try:
        code = proc.wait(timeout=timeout) if timeout else None
    except subprocess.TimeoutExpired:
        code = None
    if code is None:
        _kill_group(proc.pid, PIPE_KILL_GRACE_S, proc)
        proc.wait()
    proc.stdout.close()
    return code


def _kill_group(pgid: int, grace: float, leader: subprocess.Popen | None = None) -> None:
    """SIGTERM to process group ``pgid``, SIGKILL to what is left of it after ``grace`` s.
    ``leader`` (the shell) is reaped while waiting, so its exit is seen."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if leader is not None:
            leader.poll()
        if not _signal_group(pgid, 0):
            return
        time.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _exit_message(code: int, err: BinaryIO) -> str:
    err.seek(0)
    tail = err.read()[-400:].decode("utf-8", "replace").strip()
    return f"command exited with status {code}" + (f": {tail}" if tail else "")
