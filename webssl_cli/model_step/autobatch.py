"""Batch size chosen from the device's memory, and a run-time back-off on out-of-memory.

* :func:`find_batch_size` probes once before a run (``--batch-size auto``): it doubles the
  batch until the device runs out of memory (or ``limit``), binary-searches the boundary,
  and returns the largest batch that fit times ``headroom``, rounded down to a multiple of 8.
* :class:`OOMBackoff` wraps every model call of a run: a batch that runs out of memory is
  split into halves (and the smaller size kept for later batches) instead of killing a run
  that may have worked for hours.
* :func:`step_probe` turns a :class:`~webssl_cli.model_step.ModelStep` into the
  ``try_batch`` callable :func:`find_batch_size` needs (synthetic uint8 images).

An OOM is ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError``), or a RuntimeError
whose message says the allocation failed (cuBLAS / cuDNN workspace, or the CPU allocator).
"""
from __future__ import annotations

import gc
from collections.abc import Callable

import torch

from ..errors import WebsslError

CPU_DEFAULT_BATCH = 16      # CPU throughput barely depends on the batch beyond a few images
_OOM_MARKERS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE", "DefaultCPUAllocator: can't allocate")


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` means the device (or host) could not allocate memory."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OOM_MARKERS)


def free_memory() -> None:
    """Drop garbage and hand cached CUDA blocks back after an OOM (call outside ``except``)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _fits(try_batch: Callable[[int], None], n: int) -> bool:
    oom = False
    try:
        try_batch(n)
    except Exception as exc:   # noqa: BLE001 - only OOMs are swallowed, the rest re-raised
        if not is_oom(exc):
            raise
        oom = True
    # The traceback (and the activations its frames hold) is gone once we are out of except.
    if oom:
        free_memory()
    return not oom


def _round_down(n: int, headroom: float) -> int:
    target = int(n * headroom)
    if n >= 8:
        return max(8, target // 8 * 8)
    return max(1, target)


def find_batch_size(try_batch: Callable[[int], None], start: int = 8, limit: int = 4096,
                    headroom: float = 0.9, device: str | torch.device | None = None,
                    cpu_default: int = CPU_DEFAULT_BATCH) -> int:
    """Largest batch for which ``try_batch(n)`` does not run out of memory, with headroom.

    ``try_batch(n)`` runs one batch of ``n`` images (forward + sync) and raises an OOM when
    it does not fit. Doubles from ``start`` up to ``limit``, then binary-searches between the
    last fit and the first OOM (to a step of 8; of 1 for tiny batches). Returns ``fit * headroom`` rounded down to a
    multiple of 8 (or at least 1 for tiny fits), after emptying the CUDA cache the probes
    filled. ``device``: on a CPU nothing is probed and
    ``cpu_default`` is returned (host memory swaps rather than failing cleanly; CPU speed
    hardly depends on the batch). Raises WebsslError when even one image does not fit.
    """
    if device is not None and torch.device(device).type == "cpu":
        return min(cpu_default, limit)
    if start < 1 or limit < 1:
        raise ValueError(f"find_batch_size: start ({start}) and limit ({limit}) must be >= 1")
    if not 0 < headroom <= 1:
        raise ValueError(f"find_batch_size: headroom must be in (0, 1], got {headroom}")
    n = min(start, limit)
    if _fits(try_batch, n):
        ok, bad = n, None
        while ok < limit:             # double up to the first OOM (or the limit)
            n = min(ok * 2, limit)
            if not _fits(try_batch, n):
                bad = n
                break
            ok = n
    else:                             # even the start is too big: halve down to 1
        ok, bad = 0, n
        while bad > 1:
            n = bad // 2
            if _fits(try_batch, n):
                ok = n
                break
            bad = n
        if ok == 0:
            raise WebsslError("--batch-size auto: even a batch of 1 image runs out of device "
                              "memory. Use a smaller model or --resolution, --precision bf16, "
                              "or a GPU with more memory.")
    if bad is not None:               # bisect to a step of 8 (of 1 below 16)
        while bad - ok > (8 if ok >= 16 else 1):
            mid = (ok + bad) // 2
            if _fits(try_batch, mid):
                ok = mid
            else:
                bad = mid
    free_memory()                     # the probes' cached blocks go back to the device
    return _round_down(ok, headroom)


def step_probe(step: Callable[[torch.Tensor], dict], resolution: int,
               device: torch.device) -> Callable[[int], None]:
    """A ``try_batch`` for :func:`find_batch_size`: one synthetic uint8 batch through ``step``."""
    def try_batch(n: int) -> None:
        images = torch.randint(0, 256, (n, 3, resolution, resolution), dtype=torch.uint8,
                               device=device)
        out = step(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        del out, images
    return try_batch


class OOMBackoff:
    """Run a model step on a batch, halving the sub-batch on OOM instead of dying.

    ``backoff(step, images)`` returns the same dict of feature tensors as ``step(images)``.
    The batch is cut into sub-batches of the current size (the loader's size at first); after
    an OOM the size is halved, memory freed, and the failed sub-batch retried; the smaller
    size is kept for the rest of the run (``self.batch_size``, ``self.backoffs``). When one
    image does not fit, it raises WebsslError with advice.
    """

    def __init__(self, batch_size: int, on_backoff: Callable[[int, int], None] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"OOMBackoff: batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.backoffs = 0
        self.on_backoff = on_backoff   # called with (old, new) sizes, e.g. to log a line

    def __call__(self, step: Callable[[torch.Tensor], dict[str, torch.Tensor]],
                 images: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(images) <= self.batch_size:
            out = self._try(step, images)
            if out is not None:
                return out
        parts: list[dict[str, torch.Tensor]] = []
        i = 0
        while i < len(images):
            chunk = images[i:i + self.batch_size]
            out = self._try(step, chunk)
            if out is None:
                continue                 # _try halved the size: retry this position
            parts.append(out)
            i += len(chunk)
        if len(parts) == 1:
            return parts[0]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _try(self, step, images: torch.Tensor) -> dict[str, torch.Tensor] | None:
        oom = False
        try:
            return step(images)
        except Exception as exc:   # noqa: BLE001 - only OOMs are handled here
            if not is_oom(exc):
                raise
            oom = True
        if oom:
            free_memory()
            # a compiled step pads short batches to ``pad_to`` rows: that many ran out of
            # memory, not the few real ones (halving those would leave batches of 1)
            self._halve(max(len(images), getattr(step, "pad_to", None) or 0))
        return None

    def _halve(self, failed: int) -> None:
        if failed <= 1:
            raise WebsslError("out of device memory on a batch of 1 image: use a smaller "
                              "model, --resolution, --precision bf16 or fewer --features "
                              "(patches are large), or a GPU with more memory.")
        old, self.batch_size = self.batch_size, max(1, min(self.batch_size, failed) // 2)
        self.backoffs += 1
        if self.on_backoff is not None:
            self.on_backoff(old, self.batch_size)
