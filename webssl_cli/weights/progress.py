"""Byte progress of one download: a rich bar on a terminal, plain lines in logs.

On a terminal (stderr) a rich progress bar shows bytes, speed and time left. Elsewhere (batch
jobs, CI logs) a line is printed every ``every`` seconds and one when the download ends, so logs
stay small but still show that a 26 GB download is moving.
"""
from __future__ import annotations

import sys
import time
from typing import Protocol


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class ByteProgress(Protocol):
    def start(self, total: int | None, initial: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def reset(self, initial: int) -> None: ...
    def close(self, ok: bool) -> None: ...


class NullProgress:
    def start(self, total: int | None, initial: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def reset(self, initial: int) -> None:
        pass

    def close(self, ok: bool) -> None:
        pass


class LineProgress:
    """Plain ``downloading NAME: 45% (1.2 GB / 2.6 GB, 80.0 MB/s)`` lines on stderr."""

    def __init__(self, name: str, every: float = 10.0) -> None:
        self.name, self.every = name, every
        self.total: int | None = None
        self.done = self.initial = 0
        self.t0 = self.last = time.monotonic()

    def start(self, total: int | None, initial: int) -> None:
        self.total, self.done, self.initial = total, initial, initial
        self.t0 = self.last = time.monotonic()
        size = human_bytes(total) if total is not None else "unknown size"
        resumed = f", resuming at {human_bytes(initial)}" if initial else ""
        print(f"downloading {self.name} ({size}{resumed})", file=sys.stderr, flush=True)

    def _line(self, prefix: str) -> str:
        rate = (self.done - self.initial) / max(time.monotonic() - self.t0, 1e-6)
        if self.total:
            pct = f"{100.0 * self.done / self.total:.0f}% "
            of = f"{human_bytes(self.done)} / {human_bytes(self.total)}"
        else:
            pct, of = "", human_bytes(self.done)
        return f"{prefix} {self.name}: {pct}({of}, {human_bytes(rate)}/s)"

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            print(self._line("downloading"), file=sys.stderr, flush=True)

    def reset(self, initial: int) -> None:
        self.done = self.initial = initial

    def close(self, ok: bool) -> None:
        print(self._line("downloaded" if ok else "stopped"), file=sys.stderr, flush=True)


class RichProgress:
    """A rich progress bar on stderr (only used when stderr is a terminal)."""

    def __init__(self, name: str) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=False)
        self.name = name
        self.task = None

    def start(self, total: int | None, initial: int) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(self.name, total=total, completed=initial)
        else:
            self.progress.update(self.task, total=total, completed=initial)

    def advance(self, n: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)

    def reset(self, initial: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=initial)

    def close(self, ok: bool) -> None:
        if self.task is not None:
            self.progress.stop()


def make_progress(name: str, enabled: bool) -> ByteProgress:
    if not enabled:
        return NullProgress()
    from rich.console import Console
    if Console(stderr=True).is_terminal:
        return RichProgress(name)
    return LineProgress(name)
