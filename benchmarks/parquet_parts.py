"""Bytes that the parts of one Parquet unit read between them (one part per DataLoader worker).

- "every n-th row" (the reader until 2026-11-27): each part streamed all the unit's rows and
  kept every n-th, so n workers read the unit n times (n times the traffic over S3/HTTP);
- "row groups dealt to parts" (now, ``parquet_reader.part_ranges``): each part reads its own
  row groups; one row group cut in k slices is read about (k + 1) / 2 times.

Real files written with pyarrow, read through a counting file object; printed as multiples of
the file's size (1.0 = each byte once).

    PYTHONPATH=. .venv/bin/python benchmarks/parquet_parts.py --parts 4,16
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from webssl_cli.config import InputConfig
from webssl_cli.readers import plan_units
from webssl_cli.readers.parquet_reader import BATCH_ROWS, iter_parquet_samples, open_parquet

ROWS, ROW_BYTES = 2000, 32 << 10


class CountingFile(io.FileIO):
    def __init__(self, path: Path) -> None:
        super().__init__(path, "rb")
        self.bytes_read = 0

    def readinto(self, buffer) -> int:
        n = super().readinto(buffer)
        self.bytes_read += n or 0
        return n

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def every_nth(path: Path, part: int, n_parts: int, f: CountingFile) -> int:
    """The old split: stream every row of the unit, keep rows with row % n_parts == part."""
    pf = open_parquet(str(path), InputConfig(inputs=(str(path),)), f)
    kept = 0
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=["image"], use_threads=False):
        kept += len(range(part, batch.num_rows, n_parts))
    return kept


def measure(path: Path, n_parts: int, old: bool) -> tuple[float, float]:
    c = InputConfig(inputs=(str(path),), shard_size=ROWS)
    (unit,) = plan_units(c)
    total, rows, t0 = 0, 0, time.perf_counter()
    for part in range(n_parts):
        with CountingFile(path) as f:
            rows += (every_nth(path, part, n_parts, f) if old else
                     sum(1 for _ in iter_parquet_samples(unit, c, part, n_parts, file=f)))
        total += f.bytes_read
    return total / path.stat().st_size, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="4,16")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    blobs = pa.array([rng.bytes(ROW_BYTES) for _ in range(ROWS)], type=pa.binary())
    print(f"one unit of {ROWS} rows x {ROW_BYTES >> 10} KiB\n")
    print("| row groups | parts | every n-th row (before) | row groups dealt (now) | ratio |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for group_rows in (100, ROWS):
            path = Path(tmp) / f"g{group_rows}.parquet"
            pq.write_table(pa.table({"image": blobs}), path, row_group_size=group_rows)
            for n in (int(p) for p in args.parts.split(",")):
                before, t_before = measure(path, n, old=True)
                now, t_now = measure(path, n, old=False)
                print(f"| {ROWS // group_rows} x {group_rows} rows | {n} | {before:.2f}x file "
                      f"({t_before:.2f} s) | {now:.2f}x file ({t_now:.2f} s) | "
                      f"{before / now:.1f}x less |")


if __name__ == "__main__":
    main()
