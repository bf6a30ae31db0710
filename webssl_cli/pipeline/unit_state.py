"""Rows of one unit collected from batches (possibly from several parts), then ordered.

Features stay in memory as the batches left them (``chunks``) unless the run's budget made
the main loop spill them (``detach`` here, ``UnitSpool.append`` on the spill thread); the
spilled rows come first in arrival order, then those still in memory."""
from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..store.ordered_rows import OrderedRows
from ..units import Failure, Unit
from .spool import UnitSpool


@dataclass
class UnitState:
    unit: Unit
    parts_left: int
    started: float = field(default_factory=time.perf_counter)
    indices: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    metas: list[dict | None] = field(default_factory=list)
    chunks: dict[str, list[np.ndarray]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    samples_seen: int = 0
    pending_rows: int = 0           # rows handed to the model whose features are not back yet
    read_errors: list[str] = field(default_factory=list)
    nbytes: int = 0                 # features held in memory for this unit (not spilled)
    spool: UnitSpool | None = None  # rows spilled to disk, if any (before those in chunks)
    spills: list[Future] = field(default_factory=list)   # queued appends to the spool
    spilled: int = 0                # feature bytes handed to the spool (detach)

    def add_rows(self, indices, keys, sources, metas, feats: dict[str, np.ndarray]) -> None:
        self.indices += indices
        self.keys += keys
        self.sources += sources
        self.metas += metas
        for name, arr in feats.items():
            self.chunks.setdefault(name, []).append(arr)
            self.nbytes += arr.nbytes

    @property
    def rows(self) -> int:
        return len(self.indices)

    def detach(self) -> tuple[dict[str, list[np.ndarray]], int]:
        """Hand over the features held in memory (to be spilled) and their bytes."""
        chunks, nbytes = self.chunks, self.nbytes
        self.chunks, self.nbytes = {}, 0
        self.spilled += nbytes
        return chunks, nbytes

    def ordered(self, feature_names: list[str], row_shapes: dict[str, tuple[int, ...]],
                dtype: np.dtype):
        """Rows sorted by their index in the unit (deterministic, whatever the worker count
        and arrival order). Features come as :class:`OrderedRows` over the spilled rows and
        the chunks in memory, read a block at a time when the unit is written."""
        order = np.argsort(np.asarray(self.indices, dtype=np.int64), kind="stable")
        spilled = (self.spool.arrays({n: row_shapes[n] for n in feature_names}, dtype)
                   if self.spool is not None else {})
        feats = {}
        for name in feature_names:
            pieces = [p for p in [spilled.get(name), *self.chunks.get(name, [])]
                      if p is not None]
            feats[name] = OrderedRows(pieces, order, row_shapes[name], dtype)
        pick = order.tolist()
        keys = [self.keys[i] for i in pick]
        sources = [self.sources[i] for i in pick]
        metas = [self.metas[i] for i in pick]
        failures = sorted(self.failures, key=lambda f: f.index)
        return keys, sources, metas, feats, failures
