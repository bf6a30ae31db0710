"""A unit's features spilled to disk while the unit is still being read.

When the features held in memory pass the run's budget (``spill_budget``), the main loop
hands the largest in-flight unit's rows to the spill thread, which appends them here: one
raw file per feature, rows in arrival order, in a staging folder of the output
(``<manifest>/staging/<unit>.<process>-<random>/``). When the unit is written its spilled
rows are read back a block at a time (``store.OrderedRows`` over :class:`SpoolRows`), and
the folder is removed. Reads are ``pread``s into fresh arrays, never a memory map: only the
rows being written are in memory (a mapped spool counts whole in the process's RSS, which
is what schedulers and users watch). The files stay open meanwhile, so a sweep by another
rank cannot take them away; a folder left by a killed process is swept as any staging
folder is.

No fsync: a spool is never a result. A crash loses it with the unit, which is redone.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..store.layout import OutputLayout, feature_slug
from ..store.staging import new_attempt_dir


class UnitSpool:
    def __init__(self, layout: OutputLayout, unit_id: str) -> None:
        self.layout, self.unit_id = layout, unit_id
        self.folder: Path | None = None
        self.files: dict[str, BinaryIO] = {}
        self.rows = 0                  # rows spilled (every feature holds this many)
        self.removed = False

    def append(self, chunks: dict[str, list[np.ndarray]]) -> None:
        """Append rows (each feature's arrays, in arrival order) after those spilled before."""
        if self.removed:
            return                     # the unit was given up meanwhile
        counts = {name: sum(len(a) for a in parts) for name, parts in chunks.items()}
        if len(set(counts.values())) > 1:
            raise ValueError(f"unit {self.unit_id}: features to spill differ in rows: {counts}")
        if self.folder is None:
            self.folder = new_attempt_dir(self.layout, self.unit_id)
        for name, parts in chunks.items():
            f = self.files.get(name)
            if f is None:
                f = self.files[name] = open(self.folder / f"{feature_slug(name)}.spool", "w+b")
            for a in parts:
                if len(a):          # (a batch whose rows of this unit were all non-finite)
                    f.write(memoryview(np.ascontiguousarray(a)).cast("B"))
        self.rows += next(iter(counts.values()), 0)

    def arrays(self, row_shapes: dict[str, tuple[int, ...]],
               dtype: np.dtype) -> dict[str, SpoolRows | np.ndarray]:
        """Each feature's spilled rows, (rows, *shape), read on demand."""
        out: dict[str, SpoolRows | np.ndarray] = {}
        for name, shape in row_shapes.items():
            f = self.files.get(name)
            if f is None or self.rows == 0:
                out[name] = np.zeros((0, *shape), dtype=dtype)
                continue
            f.flush()
            out[name] = SpoolRows(f.fileno(), self.rows, shape, dtype)
        return out

    def remove(self) -> None:
        """Close and delete the spool (idempotent; also for a unit given up or not written)."""
        self.removed = True
        for f in self.files.values():
            try:
                f.close()
            except OSError:
                pass
        self.files.clear()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


class SpoolRows:
    """The rows of one spool file, read with ``pread``: ``rows[a:b]`` or ``rows[index_array]``
    (read in windows of at most WINDOW bytes of the file, so a gather of rows scattered over
    the whole spool never reads it whole at once)."""

    WINDOW = 16 << 20

    def __init__(self, fd: int, rows: int, row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.fd = fd
        self.shape = (rows, *row_shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = self.dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, sel: slice | np.ndarray) -> np.ndarray:
        if isinstance(sel, slice):
            lo, hi, step = sel.indices(len(self))
            if step != 1:
                raise TypeError("spooled rows are read as rows[a:b] or rows[index array]")
            return self._read(lo, max(lo, hi))
        sel = np.asarray(sel, dtype=np.int64)
        out = np.empty((len(sel), *self.shape[1:]), dtype=self.dtype)
        by_pos = np.argsort(sel, kind="stable")
        pos = sel[by_pos]
        per = max(1, self.WINDOW // max(1, self.row_bytes))
        i = 0
        while i < len(pos):
            j = int(np.searchsorted(pos, pos[i] + per, side="left"))
            window = self._read(int(pos[i]), int(pos[j - 1]) + 1)
            out[by_pos[i:j]] = window[pos[i:j] - pos[i]]
            i = j
        return out

    def _read(self, lo: int, hi: int) -> np.ndarray:
        if not 0 <= lo <= hi <= len(self):
            raise IndexError(f"rows {lo}..{hi} of a spool of {len(self)} rows")
        out = np.empty((hi - lo, *self.shape[1:]), dtype=self.dtype)
        if hi == lo:
            return out
        view = memoryview(out).cast("B")
        done, offset = 0, lo * self.row_bytes
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], offset + done)
            if n == 0:
                raise OSError(f"a spool file ended at byte {offset + done}, before its "
                              f"{len(self)} rows: it was truncated by something else")
            done += n
        return out
