"""Pieces from several units become full model batches; rows go back to their units."""
from __future__ import annotations

import numpy as np
import torch

from webssl_cli.pipeline.assembler import BatchAssembler, Segment, split_rows


def piece(unit: int, start: int, n: int) -> Segment:
    idx = list(range(start, start + n))
    images = torch.tensor(idx, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()
    return Segment(unit, images, idx, [f"u{unit}/{i}" for i in idx], ["src"] * n, [None] * n)


def test_full_batches_across_units_and_rows_back_to_units() -> None:
    asm = BatchAssembler(4, torch.device("cpu"))
    for seg in (piece(0, 0, 3), piece(1, 10, 5), piece(2, 20, 2), piece(0, 3, 7)):
        asm.add(seg)
    sizes, got = [], {}
    while asm.rows:
        segments, images = asm.take()
        sizes.append(images.shape[0])
        host = {"cls": images[:, 0, 0, 0].numpy().astype(np.int64)}   # a feature = the row id
        for seg, rows in split_rows(segments, host):
            assert rows["cls"].tolist() == seg.indices                 # features follow rows
            got.setdefault(seg.unit_index, []).extend(seg.keys)
    assert sizes == [4, 4, 4, 4, 1]
    assert got[0] == [f"u0/{i}" for i in range(10)]
    assert got[1] == [f"u1/{i}" for i in range(10, 15)]
    assert got[2] == ["u2/20", "u2/21"]
