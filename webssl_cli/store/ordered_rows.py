"""One feature's rows in output order, read a block at a time instead of copied whole.

A unit's rows arrive in pieces (one per model batch, interleaved across the parts that
DataLoader workers read), some of them spilled to disk. The writers used to concatenate the
pieces and then sort them: two more copies of the unit's features at write time, on top of
the pieces. Here the pieces stay where they are (arrays, or rows spilled to a file) and
``rows[a:b]`` gathers output rows ``a..b`` only, so writing a unit needs one block of memory.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class OrderedRows:
    """``pieces`` (of shape (n_i, *row_shape), in arrival order: arrays, or anything with
    ``shape``, ``dtype``, ``len`` and ``piece[a:b]`` / ``piece[index_array]`` giving arrays,
    as ``pipeline.spool.SpoolRows``) seen through ``order``: output row r is row
    ``order[r]`` of the pieces' concatenation."""

    def __init__(self, pieces: Sequence[Any], order: np.ndarray,
                 row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        sizes = [len(p) for p in pieces]
        if sum(sizes) != len(order):
            raise ValueError(f"{len(order)} rows ordered but the pieces hold {sum(sizes)}")
        for p in pieces:
            if tuple(p.shape[1:]) != tuple(row_shape) or p.dtype != dtype:
                raise ValueError(f"a piece of shape {p.shape} and dtype {p.dtype} does not "
                                 f"hold rows of shape {tuple(row_shape)} and dtype {dtype}")
        self.pieces = list(pieces)
        self.starts = np.cumsum([0, *sizes])
        self.order = np.asarray(order, dtype=np.int64)
        self.shape = (len(self.order), *row_shape)
        self.dtype = np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        """Output rows ``rows`` (a slice with step 1) as a new C-contiguous array."""
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("OrderedRows is read in blocks: rows[a:b]")
        pos = self.order[rows]
        out = np.empty((len(pos), *self.shape[1:]), dtype=self.dtype)
        if not len(pos):
            return out
        piece = np.searchsorted(self.starts, pos, side="right") - 1
        # the block's rows grouped by piece (output order kept inside a group): one copy per
        # piece, a plain slice when its rows are consecutive on both sides (a tar shard read
        # by one worker), else a gather (a folder unit's parts interleave row by row)
        grouped = np.argsort(piece, kind="stable")
        bounds = np.flatnonzero(np.diff(piece[grouped])) + 1
        for rows_out in np.split(grouped, bounds):
            k = int(piece[rows_out[0]])
            local = pos[rows_out] - self.starts[k]
            n = len(rows_out)
            a, lo = int(rows_out[0]), int(local[0])
            if (rows_out[-1] - a == n - 1 and local[-1] - lo == n - 1
                    and (n < 3 or bool(np.all(np.diff(local) == 1)))):
                out[a:a + n] = self.pieces[k][lo:lo + n]
            else:
                out[rows_out] = self.pieces[k][local]
        return out
