"""Rows whose features hold a NaN or inf are not written: each becomes a failure-ledger row
(stage "model", NonFiniteFeatures) naming the features and what to do. A float16 output
turns values beyond +-65504 into inf; NaN rows come from the weights or an overflowing
fp16 autocast. Either way a silent inf would poison every similarity computed from it."""
from __future__ import annotations

import numpy as np

from ..units import Failure
from .assembler import Segment


def split_nonfinite(seg: Segment, rows: dict[str, np.ndarray], bad: np.ndarray,
                    names: list[str], out_dtype: str, precision: str
                    ) -> tuple[Segment, dict[str, np.ndarray], list[Failure]]:
    """``bad``: (n, F) bool per row and feature (``names`` order). Returns the segment and
    rows without the flagged rows, and a Failure for each of those."""
    hit = bad.any(axis=1)
    if not hit.any():
        return seg, rows, []
    keep = np.flatnonzero(~hit)
    failures = []
    for i in np.flatnonzero(hit).tolist():
        which = ", ".join(n for n, b in zip(names, bad[i]) if b)
        failures.append(Failure(seg.keys[i], seg.sources[i], "model", "NonFiniteFeatures",
                                f"NaN or inf in {which}; {advice(out_dtype, precision)}",
                                seg.indices[i]))
    pick = keep.tolist()
    # the model has run: the kept rows need their bookkeeping, not their images
    kept = Segment(seg.unit_index, seg.images[:0], [seg.indices[i] for i in pick],
                   [seg.keys[i] for i in pick], [seg.sources[i] for i in pick],
                   [seg.metas[i] for i in pick])
    return kept, {k: v[keep] for k, v in rows.items()}, failures


def advice(out_dtype: str, precision: str) -> str:
    tips = []
    if out_dtype == "float16":
        tips.append("float16 output holds at most 65504: write float32 (--out-dtype float32) "
                    "into a new --out")
    if precision == "fp16":
        tips.append("fp16 autocast can overflow in these models: use --precision bf16 or fp32")
    tips.append("if it persists, check the weights")
    return "; ".join(tips)
