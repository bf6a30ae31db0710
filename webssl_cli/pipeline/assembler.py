"""Full model batches from the loader's per-unit pieces.

Workers batch within one part of one unit, so a unit's last piece (and every piece of a
unit smaller than the batch) is short. The assembler stacks pieces from any units into
batches of exactly ``batch_size`` rows (the last one of a run may be shorter), so the GPU
always sees full batches and a compiled model never meets a new shape. Each row keeps its
unit and index; :func:`split_rows` hands the features back to the units.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Segment:
    unit_index: int
    images: torch.Tensor          # uint8 (n,3,S,S), host (pinned) or device
    indices: list[int]
    keys: list[str]
    sources: list[str]
    metas: list[dict | None]

    def __len__(self) -> int:
        return len(self.indices)

    def split(self, n: int) -> tuple["Segment", "Segment"]:
        a = Segment(self.unit_index, self.images[:n], self.indices[:n], self.keys[:n],
                    self.sources[:n], self.metas[:n])
        b = Segment(self.unit_index, self.images[n:], self.indices[n:], self.keys[n:],
                    self.sources[n:], self.metas[n:])
        return a, b


class BatchAssembler:
    def __init__(self, batch_size: int, device: torch.device) -> None:
        self.batch_size, self.device = batch_size, device
        self.segments: list[Segment] = []
        self.rows = 0

    def add(self, seg: Segment) -> None:
        if len(seg):
            self.segments.append(seg)
            self.rows += len(seg)

    def ready(self) -> bool:
        return self.rows >= self.batch_size

    def take(self) -> tuple[list[Segment], torch.Tensor] | None:
        """Pop up to ``batch_size`` rows: their segments and the stacked images on the device."""
        if not self.rows:
            return None
        want, taken = self.batch_size, []
        while want and self.segments:
            seg = self.segments.pop(0)
            if len(seg) > want:
                seg, rest = seg.split(want)
                self.segments.insert(0, rest)
            taken.append(seg)
            want -= len(seg)
        self.rows -= sum(len(s) for s in taken)
        parts = [s.images.to(self.device, non_blocking=True) for s in taken]
        batch = parts[0] if len(parts) == 1 else torch.cat(parts)
        if self.device.type == "cpu":
            # the pieces are the workers' /dev/shm buffers (not pinned, not copied by .to):
            # the segments live on as bookkeeping until the batch's features come back, so
            # let go of them now (on CUDA the pinned copies are the caching allocator's)
            for s in taken:
                s.images = s.images[:0]
        return taken, batch


def split_rows(segments: list[Segment], host: dict):
    """Yield (segment, {feature: rows of this segment}) from batch-level host arrays. The
    rows are copies: a unit holds its own rows until written or spilled, never a view that
    keeps a whole batch (rows of other units, pinned memory) alive."""
    start = 0
    for seg in segments:
        end = start + len(seg)
        yield seg, {k: v[start:end].copy() for k, v in host.items()}
        start = end
