"""Stage 1: read + decode + preprocess in DataLoader workers, fed by a queue of work items.

The runner claims units and puts their parts on a work queue; persistent DataLoader workers
take parts, read samples (``readers.iter_samples``), decode them to uint8 (3,S,S) tensors
(``preprocess.load_sample``) and yield ready batches tagged with the unit and sample indices.
Failed samples travel with the batches as :class:`Failure` records; the end of every part is
announced with a marker (sample count, read time, or the error that broke the shard).
Results come back in arrival order (``in_order=False``) so a worker waiting for work never
blocks the others.
"""
from __future__ import annotations

import errno
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, IterableDataset

from ..config import InputConfig, PreprocessConfig
from ..errors import CODE_ERRORS
from ..units import Failure, Unit
from .decode_share import CpuPick, SharedShare
from .shared_memory import wait_for_room
from .worker_lifecycle import PARENT_POLL, stop_workers, worker_init


@dataclass(frozen=True)
class WorkItem:
    unit: Unit
    part: int
    n_parts: int


@dataclass
class Batch:
    unit_index: int
    part: int
    images: torch.Tensor | None            # uint8 (b,3,S,S); None for an end-of-part marker
    raw_blob: torch.Tensor | None = None    # --decode gpu: the JPEGs' bytes back to back
    raw_sizes: list[int] = field(default_factory=list)
    raw_indices: list[int] = field(default_factory=list)
    raw_keys: list[str] = field(default_factory=list)
    raw_sources: list[str] = field(default_factory=list)
    raw_metas: list[dict | None] = field(default_factory=list)
    raw_decoded: list[int] = field(default_factory=list)   # each JPEG's decoded bytes
    indices: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    metas: list[dict | None] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    decode_seconds: float = 0.0            # the worker's busy time for this piece
    cpu_seconds: float = 0.0               # of it, decoding on the CPU (``load_sample``)
    cpu_images: int = 0                    # images it decoded (or failed to) on the CPU
    gpu_eligible: int = 0                  # --decode gpu: JPEGs the GPU could take ...
    cpu_picked: int = 0                    # ... of which decoded here (decode_share)
    end: bool = False
    samples_seen: int = 0                  # set on the end marker: samples of this part
    read_error: str | None = None          # set on the end marker when the shard broke

    def add_row(self, s, raw: bool = False) -> None:
        """Record a sample's bookkeeping (decoded rows, or raw JPEGs for --decode gpu)."""
        cols = ((self.raw_indices, self.raw_keys, self.raw_sources, self.raw_metas) if raw
                else (self.indices, self.keys, self.sources, self.metas))
        for col, value in zip(cols, (s.index, s.key, s.source, s.meta)):
            col.append(value)

    @property
    def raw(self) -> list[torch.Tensor]:
        """The raw JPEGs (--decode gpu), as 1-D uint8 views of one blob. One tensor per batch
        crosses from the worker (one shared-memory segment, not one per image: 256 separate
        tensors cost about 7x more to pass, measured in benchmarks/raw_ipc.py)."""
        if self.raw_blob is None:
            return []
        return list(torch.split(self.raw_blob, self.raw_sizes))

    def drop_raw(self) -> None:
        self.raw_blob, self.raw_sizes = None, []
        self.raw_indices, self.raw_keys, self.raw_sources, self.raw_metas = [], [], [], []
        self.raw_decoded = []

    def pin_memory(self) -> "Batch":
        """Called by the DataLoader's pinning thread (pin_memory=True) on CUDA runs."""
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


MIN_PIECE = 16


def piece_size(batch_size: int, num_workers: int, gpu_decode: bool) -> int:
    """Rows per worker piece. Workers hand over pieces of about ``batch_size / num_workers``
    (at least 16) rather than whole batches: the assembler stacks pieces from all workers into
    full model batches, so the first batch is ready after each worker decoded a few images
    instead of one worker decoding a whole batch (16 workers x 256 images: ~0.05 s instead
    of ~0.7 s of a cold GPU), and a unit's tail is never held back by a half-filled batch.
    ``--decode gpu`` keeps whole batches: nvJPEG decodes a batch in one call."""
    if gpu_decode or num_workers <= 1:
        return batch_size
    return min(batch_size, max(MIN_PIECE, -(-batch_size // num_workers)))


def iter_part(item: WorkItem, icfg: InputConfig, pcfg: PreprocessConfig,
              batch_size: int, gpu_decode: bool = False,
              pick: CpuPick | None = None) -> Iterator[Batch]:
    """Read, decode and batch one part of one unit (runs inside a worker). With
    ``gpu_decode``, JPEGs the GPU can take travel raw, except those ``pick`` keeps for the
    CPU (``decode_share``). A piece's ``decode_seconds`` is the worker's busy time for it: the
    time it sat waiting to be taken (the loader's prefetch full) is not counted."""
    from ..preprocess import DecodeError, load_sample
    from ..readers import iter_samples
    from .gpu_decode import gpu_route

    unit = item.unit
    batch = Batch(unit.index, item.part, None)
    imgs: list[torch.Tensor] = []
    raws: list[bytes] = []          # --decode gpu: packed into one tensor at flush
    seen = 0
    t0 = time.perf_counter()

    def flush() -> Batch:
        nonlocal batch, imgs, raws
        out = batch
        out.images = torch.stack(imgs) if imgs else None
        if raws:
            out.raw_blob = torch.frombuffer(bytearray(b"".join(raws)), dtype=torch.uint8)
            out.raw_sizes = [len(r) for r in raws]
        out.decode_seconds = time.perf_counter() - t0
        batch, imgs, raws = Batch(unit.index, item.part, None), [], []
        return out

    error = None
    try:
        for s in iter_samples(unit, icfg, item.part, item.n_parts):
            seen += 1
            if s.data is None:
                batch.failures.append(Failure(s.key, s.source, "read", s.error_type or "ReadError",
                                              s.error or "unreadable", s.index))
                continue
            decoded, length = gpu_route(s.data, pcfg) if gpu_decode else (0, 0)
            if decoded:
                batch.gpu_eligible += 1
                if pick is not None and pick():
                    batch.cpu_picked += 1
                    decoded = 0
            if decoded:
                raws.append(s.data if length == len(s.data) else s.data[:length])
                batch.add_row(s, raw=True)
                batch.raw_decoded.append(decoded)
                if len(imgs) + len(raws) >= batch_size:
                    yield flush()
                    t0 = time.perf_counter()
                continue
            batch.cpu_images += 1
            t1 = time.perf_counter()
            try:
                img = load_sample(s.data, pcfg)
            except DecodeError as exc:
                batch.failures.append(Failure(s.key, s.source, "decode", exc.error_type,
                                              exc.message, s.index))
                continue
            except CODE_ERRORS:        # not the image's fault: the unit fails (read_error)
                raise
            except Exception as exc:   # never let one sample stop the run
                batch.failures.append(Failure(s.key, s.source, "decode", type(exc).__name__,
                                              str(exc)[:500], s.index))
                continue
            finally:
                batch.cpu_seconds += time.perf_counter() - t1
            imgs.append(img)
            batch.add_row(s)
            if len(imgs) + len(raws) >= batch_size:
                yield flush()
                t0 = time.perf_counter()
    except Exception as exc:   # the shard itself broke (truncated tar, dropped connection)
        error = f"{type(exc).__name__}: {exc}"
    if imgs or raws or batch.failures:
        yield flush()
    yield Batch(unit.index, item.part, None, end=True, samples_seen=seen, read_error=error)


class WorkQueueDataset(IterableDataset):
    """What a worker iterates: parts taken from the shared work queue until a None.

    ``parent_pid`` is the main process (recorded where the dataset is made, before the
    workers fork) so that a worker can tell when it has been orphaned."""

    def __init__(self, work: "mp.Queue[WorkItem | None]", icfg: InputConfig,
                 pcfg: PreprocessConfig, batch_size: int, gpu_decode: bool,
                 share: SharedShare | None = None) -> None:
        self.work, self.icfg, self.pcfg, self.batch_size = work, icfg, pcfg, batch_size
        self.gpu_decode, self.share = gpu_decode, share
        self.parent_pid = os.getpid()

    def __iter__(self) -> Iterator[Batch]:
        pick = CpuPick(self.share)          # one per worker, across its parts
        while True:
            item = self._next_item()
            if item is None:
                return
            for b in iter_part(item, self.icfg, self.pcfg, self.batch_size, self.gpu_decode,
                               pick):
                held = sum(t.nbytes for t in (b.images, b.raw_blob) if t is not None)
                if held:
                    wait_for_room(held)     # the put to the main process goes through /dev/shm
                yield b

    def _next_item(self) -> WorkItem | None:
        """Wait for the next part. Polls rather than blocking for good: after a ``kill -9`` of
        the main process no part and no None will ever come, and a worker without the Linux
        parent-death signal (``worker_lifecycle``) would otherwise wait here forever. It exits
        without cleanup: there is nobody left to hand anything to."""
        while True:
            try:
                return self.work.get(timeout=PARENT_POLL)
            except queue.Empty:
                if os.getppid() != self.parent_pid:
                    os._exit(0)


def raise_open_file_limit() -> None:
    """Lift this process's soft limit on open files to the hard one (no privilege needed):
    workers, their queues and the file handles of the pieces they pass take many, and a
    soft limit of 1024 under a hard one of a million is common. A hard limit too low still
    ends the run, with what to do (cli/errors.py)."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def start_workers(loader: DataLoader):
    """``iter(loader)``, which forks the workers one by one. If that fails part way (too many
    open files, no memory for a fork), the workers already started are killed here: nobody
    else knows them, they ignore SIGTERM (``worker_lifecycle``), and multiprocessing's exit
    handler, which joins its children, waited for them forever."""
    before = {p.pid for p in mp.active_children()}
    try:
        return iter(loader)
    except BaseException as exc:
        for p in mp.active_children():
            if p.pid not in before:
                p.kill()
                p.join(5)
        tb = exc.__traceback__
        while tb is not None:   # torch's half-made iterator, whose __del__ would print an
            it = tb.tb_frame.f_locals.get("self")      # AttributeError traceback: its
            if type(it).__name__ == "_MultiProcessingDataLoaderIter":   # workers are gone
                it._shutdown = True
            tb = tb.tb_next
        raise


class BatchSource:
    """Owns the work queue and the DataLoader; ``submit`` parts, iterate ready pieces
    (:class:`Batch` of at most :func:`piece_size` rows; the assembler makes model batches)."""

    def __init__(self, icfg: InputConfig, pcfg: PreprocessConfig, batch_size: int,
                 num_workers: int, pin_memory: bool, prefetch_factor: int = 4,
                 gpu_decode: bool = False, share: SharedShare | None = None) -> None:
        """``share``: with ``gpu_decode``, the share of GPU-decodable JPEGs the workers
        decode themselves (``decode_share``; made before the workers fork)."""
        self.num_workers = num_workers
        self.gpu_decode = gpu_decode
        self.pin_memory = pin_memory
        batch_size = piece_size(batch_size, num_workers, gpu_decode)
        self.icfg, self.pcfg, self.batch_size = icfg, pcfg, batch_size
        if num_workers > 0:
            raise_open_file_limit()
            ctx = mp.get_context("fork")
            self.work: queue.Queue | mp.Queue = ctx.Queue()
            ds = WorkQueueDataset(self.work, icfg, pcfg, batch_size, gpu_decode, share)
            self.loader = DataLoader(ds, batch_size=None, num_workers=num_workers,
                                     pin_memory=pin_memory, prefetch_factor=prefetch_factor,
                                     worker_init_fn=worker_init, multiprocessing_context=ctx,
                                     in_order=False, persistent_workers=False)
            self._it = start_workers(self.loader)
        else:
            self.work = queue.Queue()
            self._it = None
            self._local: Iterator[Batch] | None = None
            self._pick = CpuPick(share)
        self.outstanding = 0   # parts submitted whose end marker has not come back

    def submit(self, unit: Unit) -> int:
        n = self.num_workers if (unit.splittable and self.num_workers > 1) else 1
        for part in range(n):
            self.work.put(WorkItem(unit, part, n))
        self.outstanding += n
        return n

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        """The next ready piece; None if none came within ``timeout`` seconds (None or 0:
        wait as long as it takes). The runner waits in such slices so that it can report a
        stalled input and commit the units it finished meanwhile (runner.py ``next_input``).

        The DataLoader iterator has no timeout per call, only the loader's ``timeout``, which
        it reads on every fetch (``_timeout``) and which raises "DataLoader timed out" before
        the iterator's state changes: it is set per call here and that error becomes None.
        With ``num_workers`` 0 the main thread reads and decodes, so this returns only once a
        piece is ready."""
        if self.outstanding <= 0:
            raise RuntimeError("next_batch with nothing submitted")
        if self._it is not None:
            it = self._it
            it._timeout = timeout or 0
            try:
                b = next(it)
            except RuntimeError as exc:
                if "Too many open files" in str(exc):   # torch's, receiving a piece
                    raise OSError(errno.EMFILE, "Too many open files (receiving decoded "
                                  "images from the DataLoader workers)") from None
                if not (timeout and str(exc).startswith("DataLoader timed out")):
                    raise
                pin = getattr(it, "_pin_memory_thread", None)
                if pin is not None and not pin.is_alive():   # a timed fetch skips this check
                    raise RuntimeError("DataLoader pin memory thread exited") from None
                return None
        else:
            while True:
                if self._local is None:
                    item = self.work.get_nowait()
                    self._local = iter_part(item, self.icfg, self.pcfg, self.batch_size,
                                            self.gpu_decode, self._pick)
                try:
                    b = next(self._local)
                    break
                except StopIteration:
                    self._local = None
            if self.pin_memory:      # as the DataLoader's pinning thread does with workers
                b = b.pin_memory()
        if b.end:
            self.outstanding -= 1
        return b

    def close(self) -> None:
        """Stop the workers, whatever they are doing: at once when they wait for work, in
        about ASK_GRACE seconds when one is blocked in a read, 5 s at worst
        (``worker_lifecycle.stop_workers``). Safe to call twice."""
        it, self._it = self._it, None
        if it is None:
            return
        for _ in range(self.num_workers):
            self.work.put(None)        # a worker waiting for a part leaves its dataset
        stop_workers(it)
        self.work.cancel_join_thread()  # parts no worker will take must not hold up exit
        self.work.close()
