"""Room in /dev/shm for the pieces DataLoader workers hand over.

Workers pass their decoded pieces to the main process through shared memory (/dev/shm).
When it is too small (Docker's default is 64 MiB), a worker's put fails in a background
thread of the worker: the piece is lost with only a printed error, and once more pieces are
lost than the loader prefetches, the loader stops asking the workers and the run waited for
input forever. So:

- before the workers start, the room the pieces in flight need is checked against what is
  free (:func:`fit_prefetch`): the loader's prefetch is lowered to fit, and a run that
  cannot fit even one piece per worker stops with what to do (exit 2);
- a worker waits for room before it hands a piece over (:func:`wait_for_room`), so that
  /dev/shm filled up later by other processes slows the run down instead of losing pieces.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping

from ..errors import UsageError

SHM = "/dev/shm"
USABLE = 0.8          # of the free room: other processes of the node use it too
ROOM_POLL = 0.05      # seconds between looks while a worker waits for room
ROOM_SAY_EVERY = 60.0  # seconds between a waiting worker's messages


def shm_free(path: str = SHM) -> int | None:
    """Bytes free in ``path`` (None where it cannot be read: not Linux, no /dev/shm)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def local_processes(env: Mapping[str, str] = os.environ) -> int:
    """How many webssl processes of this job share the node's /dev/shm: torchrun's and
    ``--gpus``' LOCAL_WORLD_SIZE, else SLURM's tasks per node, else 1."""
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        try:
            return max(1, int(env.get(name, "")))
        except ValueError:
            continue
    return 1


def shm_need(workers: int, prefetch: int, piece_bytes: int, batch_bytes: int,
             pinned: bool) -> int:
    """Bytes in /dev/shm at most: each worker's prefetched pieces and one on its way. With
    pinned memory (CUDA) the pinning thread copies each piece out at once; without it (CPU
    devices) the main process also holds a batch being assembled and the one in the model."""
    return workers * prefetch * piece_bytes + piece_bytes + (0 if pinned else 2 * batch_bytes)


def piece_bytes(batch: int, workers: int, resolution: int, gpu_decode: bool) -> int:
    """Bytes of one worker piece of decoded images (``loader.piece_size`` rows). With
    ``--decode gpu`` a piece carries the files' bytes instead, counted here as decoded:
    big photos take more (the workers then wait for room, see :func:`wait_for_room`)."""
    from .loader import piece_size
    return piece_size(batch, workers, gpu_decode) * 3 * resolution ** 2


def loader_prefetch(batch: int, workers: int, resolution: int, gpu_decode: bool,
                    prefetch: int, pinned: bool, warn: Callable[[str], None]) -> int:
    """The prefetch per worker for a loader of these settings: :func:`fit_prefetch` against
    this process's share of what /dev/shm has free now."""
    free, sharing = shm_free(), local_processes()
    return fit_prefetch(workers, prefetch, piece_bytes(batch, workers, resolution, gpu_decode),
                        batch * 3 * resolution ** 2, pinned,
                        None if free is None else free // sharing, warn, sharing)


def fit_prefetch(workers: int, prefetch: int, piece: int, batch: int, pinned: bool,
                 free: int | None, warn: Callable[[str], None], sharing: int = 1) -> int:
    """The prefetch to use (``prefetch`` when it fits or the room is unknown, else the
    largest that fits, with a warning); UsageError when not even 1 fits. ``free``: this
    process's share of the free room (``sharing`` processes of the node share it)."""
    if workers <= 0 or free is None:
        return prefetch
    room = int(free * USABLE)
    need = shm_need(workers, prefetch, piece, batch, pinned)
    if need <= room:
        return prefetch
    fits = (room - shm_need(workers, 0, piece, batch, pinned)) // (workers * piece)
    share = f" (a 1/{sharing} share of it per process)" if sharing > 1 else ""
    said = (f"{SHM} has {free * sharing / 2**20:.0f} MiB free{share}; "
            f"{workers} DataLoader worker{'s' if workers > 1 else ''} x {prefetch} pieces of "
            f"{piece / 2**20:.1f} MiB in flight need about {need / 2**20:.0f} MiB there "
            "(workers hand decoded images over through it)")
    bigger = ("give it more room (docker run --shm-size=8g; Kubernetes: an emptyDir with "
              "medium Memory mounted at /dev/shm)")
    if fits >= 1:
        warn(f"warning: {said}: the loader's prefetch is lowered from {prefetch} to {fits} "
             f"per worker, which may starve the model; {bigger}")
        return int(fits)
    least = shm_need(workers, 1, piece, batch, pinned) / USABLE
    raise UsageError(f"{said}, and not even one piece per worker fits (that needs "
                     f"{least / 2**20:.0f} MiB free): {bigger}, or lower --batch-size, or "
                     "read in the main process with --num-workers 0")


def wait_for_room(nbytes: int, free: Callable[[], int | None] = shm_free,
                  say: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> None:
    """In a worker, before it hands over a piece of ``nbytes``: wait until /dev/shm has
    room for two such pieces (workers race for the last of it), saying so every minute."""
    since = said = time.monotonic()
    while True:
        left = free()
        if left is None or left >= 2 * nbytes:
            return
        now = time.monotonic()
        if now - said >= ROOM_SAY_EVERY:
            said = now
            say(f"warning: a DataLoader worker (pid {os.getpid()}) has waited "
                f"{now - since:.0f} s for {2 * nbytes / 2**20:.1f} MiB of room in {SHM} "
                f"({left / 2**20:.1f} MiB free) to hand decoded images over: free some or "
                "give it more room (docker run --shm-size=8g)")
        time.sleep(ROOM_POLL)


def stall_hint(piece: int) -> str | None:
    """For the main loop during a long stall: a warning when /dev/shm has no room for two
    pieces of ``piece`` bytes (the workers wait for room, and the stall looks like a slow
    input otherwise); None when it has, or cannot be read."""
    free = shm_free()
    if free is None or free >= 2 * piece:
        return None
    return (f"warning: the input stalls; {SHM} has {free / 2**20:.1f} MiB free, less than two "
            f"pieces of decoded images ({piece / 2**20:.1f} MiB each), which the DataLoader "
            f"workers hand over through it: they wait for room. Free {SHM} or give it more "
            "room (docker run --shm-size=8g)")


LOST_PIECES = ("; some decoded images never came back from the DataLoader workers (if "
               "'unable to allocate shared memory' is printed above, /dev/shm was full: give "
               "it more room)")
