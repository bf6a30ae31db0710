"""``pipe:`` inputs: a shell command's stdout as a shard stream. The command runs in its own
session with default signal handling, and its whole process group is stopped when the
reader is done with it, so nothing it started in the background outlives the unit."""
from __future__ import annotations

import io
import logging
import os
import select
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from .errors import StreamError

log = logging.getLogger("webssl.readers")

PIPE_KILL_GRACE_S = 2.0           # SIGTERM to a pipe: command's group, then SIGKILL
PIPE_LINGER_S = 30.0              # after an archive's end: silence of a running command that
                                  # ends the wait for more (a next archive may be slow to start)
PIPE_EXIT_WAIT_S = 2.0            # then the time the command has to exit


@contextmanager
def open_pipe(source: str) -> Iterator[BinaryIO]:
    """The command's stdout, buffered. Its :meth:`PipeOutput.bound_reads` (reached through the
    stream's ``bound_reads``) bounds the reads between a tar's end and the next archive."""
    command = source[len("pipe:"):]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=err,
                                bufsize=0, start_new_session=True,
                                preexec_fn=_default_signals)
        assert proc.stdout is not None
        output = PipeOutput(proc, PIPE_LINGER_S)
        try:
            try:
                yield _Buffered(output, 1 << 20)
            except Exception as exc:   # bad output: if the command failed, that is the news
                code = _wait_or_kill(proc, 2.0)
                if code not in (0, None, -signal.SIGKILL, -signal.SIGTERM):
                    raise StreamError(_exit_message(code, err)) from exc
                raise
            except BaseException:      # the consumer stopped early
                _wait_or_kill(proc, 0.0)
                raise
            whole = output.drain()     # padding after the end-of-archive marker
            if output.cut and proc.poll() is None:
                log.warning("%s: the command still ran, silent, %.0f s after its archive "
                            "ended: reading stopped there, and what it writes later is not "
                            "read", source, PIPE_LINGER_S)
            proc.stdout.close()
            try:
                code = proc.wait(timeout=PIPE_EXIT_WAIT_S)
            except subprocess.TimeoutExpired:   # the archive is whole; the command lingers
                code = 0
            if code in _BROKEN_PIPE and not whole:
                code = 0     # it wrote after we stopped reading: the archive was whole
            if code != 0:
                raise StreamError(_exit_message(code, err))
        finally:
            _kill_group(proc.pid, PIPE_KILL_GRACE_S)   # what the command left in the background


_BROKEN_PIPE = (128 + signal.SIGPIPE, -signal.SIGPIPE)   # died writing to a closed pipe


class PipeOutput(io.RawIOBase):
    """The command's stdout. Reads block while an archive lasts (a slow source may be silent
    for long); after an archive's end (:meth:`bound_reads`) they are bounded until a next
    archive starts, since what follows is padding or a next archive (``cat a.tar b.tar``, or a
    second download): a background child of the command that keeps stdout open, or a
    command that goes on running silently, would otherwise hold the unit forever. A bounded
    read ends the stream at the first short silence once the command (the shell) has exited
    (what it wrote is in the pipe by then), and after ``idle_s`` s of silence while it still
    runs (a next archive may be slow to start); ``cut`` then says that the end of file was
    not seen."""

    def __init__(self, proc: subprocess.Popen, idle_s: float) -> None:
        assert proc.stdout is not None
        self.proc, self.fd, self.idle_s = proc, proc.stdout.fileno(), idle_s
        self.bounded = self.eof = self.cut = False
        self._quiet_since = 0.0

    def readable(self) -> bool:
        return True

    def bound_reads(self, on: bool) -> None:
        """``on``: an archive ended, bound the waits from now; off: a next archive started."""
        if on and not self.bounded:
            self._quiet_since = time.monotonic()
        self.bounded = on

    def readinto(self, buffer) -> int:   # type: ignore[override]
        if self.eof or self.cut:
            return 0
        if self.bounded and not self._data_within_bound():
            self.cut = True
            return 0
        n = os.readv(self.fd, [buffer])
        self.eof = n == 0
        self._quiet_since = time.monotonic()
        return n

    def drain(self) -> bool:
        """Read and drop what is left (bounded); True if the end of file came."""
        self.bound_reads(True)
        while self.read(1 << 20):
            pass
        return self.eof

    def _data_within_bound(self) -> bool:
        while True:
            exited = self.proc.poll() is not None
            ready, _, _ = select.select([self.fd], [], [], 0.05 if exited else 0.25)
            if ready:
                return True
            if exited or time.monotonic() - self._quiet_since >= self.idle_s:
                return False


class _Buffered(io.BufferedReader):
    """The buffered stream handed to the tar reader; passes :meth:`bound_reads` on."""

    def bound_reads(self, on: bool) -> None:
        self.raw.bound_reads(on)   # type: ignore[attr-defined]


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
