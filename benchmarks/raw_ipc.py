"""Why `--decode gpu` batches carry their JPEGs as one blob: the cost of passing a batch of
256 raw JPEGs (60 KB each) from DataLoader workers as 256 tensors vs one packed tensor.

    PYTHONPATH=. python benchmarks/raw_ipc.py [--workers 2] [--batches 40]

Every tensor that leaves a worker gets its own shared-memory segment and file descriptor;
one tensor per batch makes that cost per batch instead of per image. Prints both rates and
their ratio, measured in the same run (interleaved, best of 2 each).
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.data import DataLoader, IterableDataset

N, SIZE = 256, 60_000


class Payloads(IterableDataset):
    def __init__(self, packed: bool, batches: int) -> None:
        self.packed, self.batches = packed, batches

    def __iter__(self):
        jpegs = [os.urandom(SIZE) for _ in range(8)]
        for _ in range(self.batches):
            raws = [jpegs[i % 8] for i in range(N)]
            if self.packed:
                yield torch.frombuffer(bytearray(b"".join(raws)), dtype=torch.uint8), [SIZE] * N
            else:
                yield [torch.frombuffer(bytearray(r), dtype=torch.uint8) for r in raws], None


def rate(packed: bool, workers: int, batches: int) -> float:
    it = iter(DataLoader(Payloads(packed, batches), batch_size=None, num_workers=workers,
                         prefetch_factor=8))
    next(it)
    t0, n = time.perf_counter(), 0
    for blob, sizes in it:
        if sizes is not None:
            torch.split(blob, sizes)      # the views the decode thread hands to nvJPEG
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=40)
    a = ap.parse_args()
    best = {True: 0.0, False: 0.0}
    for _ in range(2):
        for packed in (False, True):
            best[packed] = max(best[packed], rate(packed, a.workers, a.batches))
    print(f"{N} JPEGs of {SIZE // 1000} KB per batch, {a.workers} workers: "
          f"256 tensors {best[False]:.1f} batches/s, one blob {best[True]:.1f} batches/s, "
          f"ratio {best[True] / best[False]:.1f}x")


if __name__ == "__main__":
    main()
