"""Parquet reads at scale, on real files written with pyarrow: a unit streams its rows (it
reads its row group only up to its own last row, never a whole row group), parts and keys are
those of the unit's rows whatever the row-group layout, and planning warns about row groups
that hold many units' rows."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import images as gen
from webssl_cli.config import InputConfig
from webssl_cli.readers import iter_samples, plan_units
from webssl_cli.readers.keys import KeyDeduper
from webssl_cli.readers.parquet_reader import iter_parquet_samples


def cfg(*inputs, **kw) -> InputConfig:
    return InputConfig(inputs=tuple(str(i) for i in inputs), **kw)


# --- same samples for every row-group layout ---------------------------------------------------

N_ROWS = 41


@pytest.fixture(scope="module")
def images() -> list[bytes | None]:
    imgs: list[bytes | None] = [gen.make_jpeg(12 + i % 7, 10, seed=i) for i in range(N_ROWS)]
    for i in (0, 9, 17, 40):          # nulls at a file start, mid group, a group edge, file end
        imgs[i] = None
    return imgs


@pytest.fixture(scope="module")
def keys() -> list[str | None]:
    """Key values with repeats, nulls and a value that looks like a made-up key."""
    ks: list[str | None] = [f"id{i}" for i in range(N_ROWS)]
    ks[5] = ks[6] = ks[30] = "dup"
    ks[12] = ks[13] = None
    ks[19] = "t-000001/13"            # unit 1 at --shard-size 10 makes this key for row 13
    return ks


def expected(unit, imgs, keys, key_column):
    """What the reader yields for the whole unit, from the rows written (the contract of
    parquet_reader)."""
    start, end = unit.row_range
    if key_column:
        real = keys[start:end]
        unique = KeyDeduper(reserved={k for k in real if k is not None})
        unit_keys = [unique(k) if k is not None else unique.made(f"{unit.name}/{start + i}")
                     for i, k in enumerate(real)]
    rows = range(start, end)
    return [(row - start,
             unit_keys[row - start] if key_column else f"{unit.name}/{row}",
             imgs[row],
             None if imgs[row] is not None else "MissingImage")
            for row in rows]


@pytest.mark.parametrize("hf_struct", [False, True])
@pytest.mark.parametrize("row_group_size", [1, 4, 7, 16, 41])
@pytest.mark.parametrize("shard_size", [3, 10, 41])
def test_parts_keys_and_bytes_do_not_depend_on_the_row_groups(
        tmp_path, images, keys, row_group_size, shard_size, hf_struct):
    path = gen.write_parquet(tmp_path / "t.parquet", images, keys=keys, hf_struct=hf_struct,
                             row_group_size=row_group_size)
    for key_column in (None, "key"):
        c = cfg(path, shard_size=shard_size, key_column=key_column)
        units = plan_units(c)
        assert [u.row_range for u in units] == [
            (s, min(s + shard_size, N_ROWS)) for s in range(0, N_ROWS, shard_size)]
        for unit in units:
            for n_parts in (1, 2, 3):
                parts = [[(s.index, s.key, s.data, s.error_type)
                          for s in iter_samples(unit, c, part, n_parts)]
                         for part in range(n_parts)]
                for got in parts:          # each part in row order
                    assert [r[0] for r in got] == sorted(r[0] for r in got)
                assert sorted((r for got in parts for r in got), key=lambda r: r[0]) == \
                    expected(unit, images, keys, key_column), (unit.row_range, n_parts, key_column)


def test_a_null_image_mid_batch_keeps_its_message(tmp_path, images):
    path = gen.write_parquet(tmp_path / "t.parquet", images, hf_struct=True,
                             row_group_size=N_ROWS)
    c = cfg(path, shard_size=8)
    missing = [s for u in plan_units(c) for s in iter_samples(u, c) if s.data is None]
    assert [(s.key, s.error) for s in missing] == [
        ("t-000000/0", "row 0: image.bytes is null"), ("t-000001/9", "row 9: image.bytes is null"),
        ("t-000002/17", "row 17: image.bytes is null"),
        ("t-000005/40", "row 40: image.bytes is null")]


# --- a unit reads its row group only up to its own rows ---------------------------------------

class CountingFile(io.FileIO):
    """A real file that counts the bytes read from it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "rb")
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer) -> int:
        n = super().readinto(buffer)
        self.bytes_read += n or 0
        return n

    def readall(self) -> bytes:
        data = super().readall()
        self.bytes_read += len(data)
        return data


UNITS, UNIT_ROWS, ROW_BYTES = 20, 200, 2048


@pytest.fixture(scope="module")
def one_big_group(tmp_path_factory) -> Path:
    """20 units' worth of incompressible 2 KiB "images" (8 MB) in ONE row group, as pandas and
    pyarrow write any file under a million rows; small pages, as for large images."""
    rng = np.random.default_rng(0)
    n = UNITS * UNIT_ROWS
    blobs = [rng.bytes(ROW_BYTES) for _ in range(n)]
    path = tmp_path_factory.mktemp("big") / "big.parquet"
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(n)],
                             "image": pa.array(blobs, type=pa.binary())}),
                   path, row_group_size=n, write_batch_size=64, data_page_size=64 << 10)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    return path


@pytest.mark.parametrize("key_column", [None, "key"])
@pytest.mark.parametrize("n_parts", [1, 2])
def test_the_first_unit_of_a_big_row_group_reads_a_small_part_of_the_file(
        one_big_group, key_column, n_parts):
    c = cfg(one_big_group, shard_size=UNIT_ROWS, key_column=key_column)
    units = plan_units(c)
    assert len(units) == UNITS
    size = one_big_group.stat().st_size
    whole = CountingFile(one_big_group)
    with whole:
        assert sum(1 for _ in iter_parquet_samples(units[-1], c, 0, 1, file=whole)) == UNIT_ROWS
    assert whole.bytes_read > 0.9 * size            # the last unit reads all the row group
    for part in range(n_parts):
        with CountingFile(one_big_group) as f:
            got = list(iter_parquet_samples(units[0], c, part, n_parts, file=f))
        assert len(got) == UNIT_ROWS // n_parts and all(len(s.data) == ROW_BYTES for s in got)
        # a unit needs 1/20 of the file; it may read some pages and buffers beyond its rows
        assert f.bytes_read < size / 2, (f.bytes_read, size)


@pytest.fixture(scope="module")
def small_groups(tmp_path_factory) -> Path:
    """One unit's worth of 16 KiB "images" (6.4 MB) in 16 row groups, as Hugging Face
    writes."""
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("small") / "small.parquet"
    pq.write_table(pa.table({"image": pa.array([rng.bytes(16 << 10) for _ in range(400)],
                                               type=pa.binary())}),
                   path, row_group_size=25)
    return path


@pytest.mark.parametrize("n_parts", [4, 16])
def test_the_parts_of_a_unit_read_its_bytes_about_once_between_them(small_groups, n_parts):
    """One part per DataLoader worker: together they read the unit once, not once each (16
    workers reading every row was 16x the traffic over S3). Each part also reads the footer."""
    c = cfg(small_groups, shard_size=400)
    (unit,) = plan_units(c)
    size, total, rows = small_groups.stat().st_size, 0, []
    for part in range(n_parts):
        with CountingFile(small_groups) as f:
            rows += [s.index for s in iter_parquet_samples(unit, c, part, n_parts, file=f)]
        total += f.bytes_read
    assert sorted(rows) == list(range(400))
    assert total < 1.5 * size, (total, size)


# --- planning warns about row groups that hold many units --------------------------------------

def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "webssl.readers" and r.levelno == logging.WARNING]


def test_planning_warns_about_row_groups_of_many_units(tmp_path, caplog):
    imgs = [b"img%d" % i for i in range(100)]
    big = gen.write_parquet(tmp_path / "big.parquet", imgs, row_group_size=100)
    many = gen.write_parquet(tmp_path / "many.parquet", imgs, row_group_size=45)
    small = gen.write_parquet(tmp_path / "small.parquet", imgs, row_group_size=10)
    with caplog.at_level("WARNING", logger="webssl.readers"):
        units = plan_units(cfg(big, shard_size=10))
    assert len(units) == 10                           # warned, not refused
    (msg,) = _warnings(caplog)
    assert str(big) in msg and "one row group holds all 100 rows" in msg
    assert "--shard-size 10" in msg and "from the start up to its own rows" in msg
    assert "row_group_size=10" in msg and "raise --shard-size" in msg
    caplog.clear()
    with caplog.at_level("WARNING", logger="webssl.readers"):
        plan_units(cfg(many, shard_size=10))
    (msg,) = _warnings(caplog)
    assert "3 row groups hold up to 45 rows each" in msg
    caplog.clear()
    with caplog.at_level("WARNING", logger="webssl.readers"):
        plan_units(cfg(small, shard_size=10))         # row groups of one unit
        plan_units(cfg(big, shard_size=25))           # a row group of 4 units: fine
        plan_units(cfg(tmp_path, shard_size=40))      # a folder of the three
    assert _warnings(caplog) == []
