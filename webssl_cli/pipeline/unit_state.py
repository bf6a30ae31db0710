"""Rows of one unit collected from batches (possibly from several parts), then ordered."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..units import Failure, Unit


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
    nbytes: int = 0                 # features held for this unit

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

    def ordered(self, feature_names: list[str], empty_shapes: dict[str, tuple[int, ...]],
                dtype: np.dtype):
        """Rows sorted by their index in the unit (deterministic, whatever the worker count)."""
        order = np.argsort(np.asarray(self.indices, dtype=np.int64), kind="stable")
        feats = {}
        for name in feature_names:
            parts = self.chunks.get(name)
            arr = (np.concatenate(parts) if parts
                   else np.zeros((0, *empty_shapes[name]), dtype=dtype))
            feats[name] = arr[order]
        pick = order.tolist()
        keys = [self.keys[i] for i in pick]
        sources = [self.sources[i] for i in pick]
        metas = [self.metas[i] for i in pick]
        failures = sorted(self.failures, key=lambda f: f.index)
        return keys, sources, metas, feats, failures
