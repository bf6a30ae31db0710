"""How many bytes of features sit in host memory waiting for their unit to be written.

A unit's features stay in memory until the whole unit is written (one output file per unit),
or until the run's budget makes it spill them to disk (``spill.py``). The run's summary
reports the peak, and one warning is logged if it ever passes half the memory that was
available at the start (the host's MemAvailable, or the cgroup's limit under SLURM or a
container).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path


def available_memory() -> int | None:
    """Bytes this process may still use: MemAvailable, capped by the first cgroup memory limit
    found (v2 or v1; see :func:`_cgroup_files`). None where neither can be read."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, used_file in _cgroup_files():
        try:
            limit = limit_file.read_text().strip()
            if limit != "max" and int(limit) < 2**60:        # v1 writes "no limit" as ~2**63
                left = int(limit) - int(used_file.read_text())
                avail = left if avail is None else min(avail, left)
                break
        except (OSError, ValueError):
            continue
    return avail


def _cgroup_files() -> list[tuple[Path, Path]]:
    """(limit, usage) files: this process's own cgroup (a SLURM job step's limit), v2 or v1,
    then the root ones (a container's limit, where the namespace hides the path)."""
    root = Path("/sys/fs/cgroup")
    v2 = ("memory.max", "memory.current")
    v1 = ("memory.limit_in_bytes", "memory.usage_in_bytes")
    found = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.strip().split(":", 2)
            if path == "/":
                continue
            if controllers == "":
                found.append((root / path[1:] / v2[0], root / path[1:] / v2[1]))
            elif "memory" in controllers.split(","):
                found.append((root / "memory" / path[1:] / v1[0], root / "memory" / path[1:] / v1[1]))
    except (OSError, ValueError):
        pass
    return found + [(root / v2[0], root / v2[1]), (root / "memory" / v1[0], root / "memory" / v1[1])]


class HeldFeatures:
    def __init__(self, available: int | None, warn: Callable[[str], None],
                 fraction: float = 0.5) -> None:
        self.available, self.warn, self.fraction = available, warn, fraction
        self.bytes = self.peak = 0
        self.warned = False
        self.lock = threading.Lock()     # the main thread adds; writer and spill threads release

    def add(self, n: int) -> None:
        with self.lock:
            self.bytes += n
            self.peak = max(self.peak, self.bytes)
            over = (not self.warned and self.available is not None
                    and self.bytes > self.fraction * self.available)
            self.warned |= over
        if over:
            self.warn(f"warning: {self.bytes / 2**30:.1f} GiB of features are held in memory "
                      f"until their units are written, over {self.fraction:.0%} of the "
                      f"{self.available / 2**30:.1f} GiB available at the start. Lower "
                      "--feature-memory, --shard-size or --num-workers (tar shards: one in "
                      "flight per worker), or write smaller features (patch_mean, "
                      "patch_grid:N, float16); see docs/performance.md")

    def release(self, n: int) -> None:
        with self.lock:
            self.bytes -= n
