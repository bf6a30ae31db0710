"""`--decode gpu`, overlapped with the model: raw JPEG batches decode on a side thread (and, on
CUDA, a side stream) while the main thread keeps the model busy.

The runner submits every batch that carries raw JPEGs and moves on; :meth:`finished` hands the
decoded batches back in submission order. On CUDA, nvJPEG decoding and the resize/crop run on
the decoder's own high-priority stream; an event recorded after them makes the model's stream
wait for exactly that work, and ``record_stream`` stops the caching allocator from reusing
the images' memory while the model still reads it. On a CPU device the same code runs
without streams (torchvision's CPU decoder), which is how the tests exercise it.

Images that nvJPEG's batched calls could not take went one at a time (alone on the GPU, else
on the CPU: ``gpu_decode``), which is slower; the first batch with any logs a warning, once
per decoder, not per batch.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections import deque
from dataclasses import dataclass

import torch

from ..config import PreprocessConfig
from ..units import Failure
from .gpu_decode import decode_raw_batch
from .loader import Batch

log = logging.getLogger("webssl.decode")


@dataclass
class Decoded:
    batch: Batch                 # raw rows merged in after the CPU-decoded rows; raw emptied
    failures: list[Failure]      # samples neither the device nor the CPU fallback could decode
    seconds: float               # decode time on the side thread
    event: torch.cuda.Event | None = None
    fallbacks: int = 0           # raw JPEGs decoded one at a time (GPU alone, else CPU): slower
    raw: int = 0                 # raw JPEGs this batch brought (decode_share's measure)


def merge_decoded(b: Batch, pcfg: PreprocessConfig, device: torch.device) -> Decoded:
    """Decode ``b.raw`` on ``device`` and merge it with the batch's CPU-decoded rows."""
    t0 = time.perf_counter()
    raw = len(b.raw_sizes)
    r = decode_raw_batch(b.raw, pcfg, device, names=b.raw_keys, sizes=b.raw_decoded)
    images, ok, bad = r.images, r.ok, r.bad
    failures = [Failure(b.raw_keys[i], b.raw_sources[i], "decode", etype, msg, b.raw_indices[i])
                for i, (etype, msg) in sorted(bad.items())]
    cpu = b.images.to(device, non_blocking=True) if b.images is not None else None
    if images is not None:
        b.images = images if cpu is None else torch.cat([cpu, images])
        b.indices = b.indices + [b.raw_indices[i] for i in ok]
        b.keys = b.keys + [b.raw_keys[i] for i in ok]
        b.sources = b.sources + [b.raw_sources[i] for i in ok]
        b.metas = b.metas + [b.raw_metas[i] for i in ok]
    else:
        b.images = cpu
    b.drop_raw()
    return Decoded(b, failures, time.perf_counter() - t0, fallbacks=r.fallbacks, raw=raw)


class DeviceDecoder:
    """One decode thread in front of the model; batches come back in the order submitted."""

    def __init__(self, pcfg: PreprocessConfig, device: torch.device) -> None:
        self.pcfg, self.device = pcfg, device
        # high priority: the model's stream keeps the SMs busy, and each decode waits for the
        # previous batch's resize (decode_groups.settle_stream); at high priority those few
        # kernels are scheduled ahead of the model's queued blocks instead of behind them
        self.stream = (torch.cuda.Stream(device, priority=-1) if device.type == "cuda"
                       else None)
        self.pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="webssl-decode")
        self.queue: deque[cf.Future] = deque()
        self.warned_fallbacks = False

    def __len__(self) -> int:
        return len(self.queue)

    def submit(self, b: Batch) -> None:
        self.queue.append(self.pool.submit(self._decode, b))

    def _decode(self, b: Batch) -> Decoded:
        if self.stream is None:
            d = merge_decoded(b, self.pcfg, self.device)
        else:
            with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
                d = merge_decoded(b, self.pcfg, self.device)
                d.event = torch.cuda.Event()
                d.event.record(self.stream)
        if d.fallbacks and not self.warned_fallbacks:
            self.warned_fallbacks = True
            log.warning("GPU decode: %d JPEG(s) of a batch failed nvJPEG's batched decode and "
                        "were decoded one at a time (alone on the GPU, else on the CPU), which "
                        "is slower; later ones are not logged", d.fallbacks)
        return d

    def wait_oldest(self) -> None:
        """Block until the oldest submitted batch is decoded (its errors surface in finished)."""
        if self.queue:
            cf.wait([self.queue[0]])

    def finished(self):
        """Yield decoded batches, oldest first, for as long as the oldest one is done. On CUDA
        each batch's images are made safe to use on the current (model) stream."""
        while self.queue and self.queue[0].done():
            d: Decoded = self.queue.popleft().result()
            if d.event is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_event(d.event)
                if d.batch.images is not None:
                    d.batch.images.record_stream(current)
            yield d

    def close(self) -> None:
        """Drop queued batches (a stopped run redoes their units) and end the thread."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.queue.clear()
