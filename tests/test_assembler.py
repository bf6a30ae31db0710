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
            # a unit's own copy: holding (or spilling) it never pins the whole batch
            assert not np.shares_memory(rows["cls"], host["cls"])
            got.setdefault(seg.unit_index, []).extend(seg.keys)
    assert sizes == [4, 4, 4, 4, 1]
    assert got[0] == [f"u0/{i}" for i in range(10)]
    assert got[1] == [f"u1/{i}" for i in range(10, 15)]
    assert got[2] == ["u2/20", "u2/21"]


def test_workers_hand_over_pieces_and_the_assembler_makes_full_batches(tmp_path) -> None:
    """Real DataLoader workers over real JPEG files: pieces of batch/workers rows, rebuilt
    into full model batches with every row exactly once."""
    from tests.helpers import images as img
    from tests.helpers.pieces import loader_pieces
    from webssl_cli.config import InputConfig, PreprocessConfig
    from webssl_cli.pipeline.loader import piece_size

    for i in range(100):
        (tmp_path / f"{i:03d}.jpg").write_bytes(img.make_jpeg(40, 30, i))
    icfg = InputConfig((str(tmp_path),), shard_size=100)   # one unit, two parts of 50
    assert piece_size(64, 2, gpu_decode=False) == 32
    assert piece_size(64, 16, gpu_decode=False) == 16 and piece_size(8, 2, False) == 8
    assert piece_size(64, 2, gpu_decode=True) == 64
    asm, pieces, batches, keys = BatchAssembler(64, torch.device("cpu")), [], [], []
    for b in loader_pieces(icfg, PreprocessConfig(28), 64, 2):
        if b.images is not None:
            pieces.append(len(b.indices))
            asm.add(Segment(b.unit_index, b.images, b.indices, b.keys, b.sources, b.metas))
        while asm.ready():
            segments, images = asm.take()
            batches.append(images.shape[0])
            keys += [k for s in segments for k in s.keys]
    while asm.rows:
        segments, images = asm.take()
        batches.append(images.shape[0])
        keys += [k for s in segments for k in s.keys]
    assert max(pieces) == 32 and sum(pieces) == 100
    assert batches == [64, 36]
    assert sorted(keys) == [f"{i:03d}.jpg" for i in range(100)]
