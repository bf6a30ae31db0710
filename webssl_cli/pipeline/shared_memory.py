"""Room in /dev/shm for the batches DataLoader workers hand over.

Workers pass their decoded pieces to the main process through shared memory (/dev/shm).
When it is too small (Docker's default is 64 MiB), a worker's put fails in a background
thread of the worker: the piece is lost, nothing is raised in the main process, and the run
waited for input forever. Before the workers start, the room the pieces in flight need
(``--num-workers`` x the loader's prefetch, plus those the main process holds) is checked
against what is free: the prefetch is lowered to fit, and a run that cannot fit even one
piece per worker stops with what to do (exit 2) instead of hanging.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import UsageError

SHM = "/dev/shm"
USABLE = 0.8          # of the free room: other processes of the node use it too


def shm_free(path: str = SHM) -> int | None:
    """Bytes free in ``path`` (None where it cannot be read: not Linux, no /dev/shm)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def shm_need(workers: int, prefetch: int, piece_bytes: int, batch_bytes: int) -> int:
    """Bytes in shared memory at most: each worker's prefetched pieces, plus a batch being
    assembled and two pieces on their way through the main process."""
    return workers * prefetch * piece_bytes + batch_bytes + 2 * piece_bytes


def piece_bytes(batch: int, workers: int, resolution: int, gpu_decode: bool) -> int:
    """Bytes of one worker piece of decoded images (``loader.piece_size`` rows)."""
    from .loader import piece_size
    return piece_size(batch, workers, gpu_decode) * 3 * resolution ** 2


def loader_prefetch(batch: int, workers: int, resolution: int, gpu_decode: bool,
                    prefetch: int, warn: Callable[[str], None]) -> int:
    """The prefetch per worker for a loader of these settings: :func:`fit_prefetch` against
    what /dev/shm has free now."""
    return fit_prefetch(workers, prefetch, piece_bytes(batch, workers, resolution, gpu_decode),
                        batch * 3 * resolution ** 2, shm_free(), warn)


def fit_prefetch(workers: int, prefetch: int, piece_bytes: int, batch_bytes: int,
                 free: int | None, warn: Callable[[str], None], where: str = SHM) -> int:
    """The prefetch to use (``prefetch`` when it fits or the room is unknown, else the
    largest that fits, with a warning); UsageError when not even 1 fits."""
    if workers <= 0 or free is None:
        return prefetch
    room = int(free * USABLE)
    if shm_need(workers, prefetch, piece_bytes, batch_bytes) <= room:
        return prefetch
    fits = (room - batch_bytes - 2 * piece_bytes) // max(1, workers * piece_bytes)
    need = shm_need(workers, prefetch, piece_bytes, batch_bytes)
    said = (f"{where} has {free / 2**20:.0f} MiB free; {workers} DataLoader workers x "
            f"{prefetch} pieces of {piece_bytes / 2**20:.1f} MiB in flight need about "
            f"{need / 2**20:.0f} MiB there (workers hand decoded images over through it)")
    bigger = ("give it more room (docker run --shm-size=8g; Kubernetes: an emptyDir with "
              "medium Memory mounted at /dev/shm)")
    if fits >= 1:
        warn(f"warning: {said}: the loader's prefetch is lowered from {prefetch} to {fits} "
             f"per worker, which may starve the model; {bigger}")
        return int(fits)
    raise UsageError(f"{said}, and not even one piece per worker fits: {bigger}, or lower "
                     "--batch-size or --num-workers, or read in the main process with "
                     "--num-workers 0")
