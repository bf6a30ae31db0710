"""Finding the processes a test started indirectly (a ``pipe:`` command's shell runs in a
session of its own, outside the run's process group)."""
from __future__ import annotations

import os
from pathlib import Path


def naming(marker: Path) -> list[int]:
    """Pids of the processes whose command line names ``marker``."""
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(marker).encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                pids.append(int(name))
        except OSError:
            pass
    return pids


def stalling_pipe(shard: Path, marker: Path, stall_s: float) -> str:
    """A ``pipe:`` input that touches ``marker``, sends the first third of ``shard`` and then
    stalls for ``stall_s`` seconds (mid-tar: the reading worker blocks)."""
    import shlex
    return (f"pipe:touch {shlex.quote(str(marker))}; head -c {shard.stat().st_size // 3} "
            f"{shlex.quote(str(shard))}; sleep {stall_s:g}")


def wait_blocked_reading(p, marker: Path, within: float = 120.0) -> None:
    """Wait until process ``p``'s stalling pipe: input (:func:`stalling_pipe`) has started
    and its head has been read, so that the worker now blocks on the stall."""
    import time
    deadline = time.monotonic() + within
    while not marker.exists():
        assert p.poll() is None, p.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never started reading"
        time.sleep(0.05)
    time.sleep(1.0)
