"""Parquet and NPY output formats: round trips with pyarrow, numpy and embedding-reader."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from webssl_cli.errors import UsageError
from webssl_cli.store import (DoneRecord, OutputLayout, UnitRows, check_run_config, commit_unit,
                              feature_slug, fixed_size_list_to_numpy, read_features,
                              read_provenance, save_or_load_plan, write_failures, write_unit)
from webssl_cli.units import Failure, Unit

D, T = 8, 6
FEATURES = ("cls", "patch_mean", "patches", "layers:2", "patch_grid:2")


def _units(n: int) -> list[Unit]:
    return [Unit(index=i, kind="tar", source=f"/data/shard-{i:06d}.tar", name=f"shard-{i:06d}")
            for i in range(n)]


def _rows(unit: Unit, n: int, dtype=np.float16, seed=0) -> UnitRows:
    rng = np.random.default_rng(seed + unit.index)
    def f(*shape):
        return (rng.standard_normal((n, *shape)) * 3).astype(dtype)
    return UnitRows(keys=[f"{unit.name}/{i:04d}" for i in range(n)], sources=[unit.source] * n,
                    features={"cls": f(D), "patch_mean": f(D), "patches": f(T, D),
                              "layers:2": f(2, D), "patch_grid:2": f(4, D)},
                    json=[{"caption": f"img {i}", "i": i} if i % 2 else None for i in range(n)])


def _setup(tmp_path, fmt: str, nunits: int, out_dtype="float16"):
    layout = OutputLayout(tmp_path / "out")
    fields = {"model": "dino-tiny", "features": list(FEATURES), "format": fmt,
              "out_dtype": out_dtype}
    cfg = check_run_config(layout, fields, overwrite=False)
    units = save_or_load_plan(layout, lambda: _units(nunits), is_planner=True, wait_seconds=1)
    return layout, units, cfg


def _commit(layout, fmt, unit, rows, failures=()):
    files = write_unit(layout, fmt, unit, rows, {"model": "dino-tiny", "unit": unit.id})
    ledger = write_failures(layout, unit, list(failures))
    rec = DoneRecord(unit_id=unit.id, unit_name=unit.name, source=unit.source, rows=len(rows),
                     failed=len(failures), files=files, ledger=ledger, rank="test",
                     seconds=0.1)
    assert commit_unit(layout, rec) is True
    return rec


def test_feature_slug_mapping():
    assert feature_slug("cls") == "cls"
    assert feature_slug("patch_grid:4") == "patch_grid_4"
    assert feature_slug("layers:12") == "layers_12"
    for bad in ("metadata", "key", "../x", "a/b", "", "9x"):
        with pytest.raises(UsageError):
            feature_slug(bad)


def test_parquet_round_trip_exact_float16_shapes_and_provenance(tmp_path):
    layout, units, _ = _setup(tmp_path, "parquet", 1)
    unit = units[0]
    rows = _rows(unit, 5)
    special = np.array([np.nan, np.inf, -np.inf, 6e-8, -0.0, 65504, 1e-5, 0.1], np.float16)
    rows.features["cls"][0] = special
    rec = _commit(layout, "parquet", unit, rows,
                  [Failure(key="shard-000000/bad", source=unit.source, stage="decode",
                           error_type="UnidentifiedImageError", message="not an image", index=5)])
    path = layout.parquet_path(unit.id)
    assert [f.path for f in rec.files] == ["part-000000.parquet"]
    table = pq.read_table(path)
    assert table.column_names == ["key", "source", "json", "cls", "patch_mean", "patches",
                                  "layers_2", "patch_grid_2"]
    assert table.column("key").to_pylist() == rows.keys
    assert table.column("source").to_pylist() == rows.sources
    assert [json.loads(j) if j else None for j in table.column("json").to_pylist()] == rows.json
    for name, want in rows.features.items():
        got = fixed_size_list_to_numpy(table.column(feature_slug(name)))
        assert got.dtype == np.float16 and got.shape == want.shape
        assert np.array_equal(got.view(np.uint16), want.view(np.uint16))   # bit-exact
        field = table.schema.field(feature_slug(name))
        assert json.loads(field.metadata[b"webssl.shape"]) == list(want.shape[1:])
        assert field.metadata[b"webssl.feature"].decode() == name
    prov = read_provenance(path)
    assert prov["provenance"] == {"model": "dino-tiny", "unit": "000000"}
    assert prov["unit"]["name"] == "shard-000000"
    assert prov["features"]["patches"] == {"column": "patches", "shape": [T, D], "dtype": "float16"}
    ledger = [json.loads(line) for line in layout.failures_path(unit.id).read_text().splitlines()]
    assert ledger == [{"unit": "000000", "key": "shard-000000/bad", "source": unit.source,
                       "stage": "decode", "error_type": "UnidentifiedImageError",
                       "message": "not an image", "index": 5}]


def test_parquet_dataset_reads_all_parts_and_skips_manifest(tmp_path):
    layout, units, _ = _setup(tmp_path, "parquet", 3)
    for u in units:
        _commit(layout, "parquet", u, _rows(u, 4))
    table = ds.dataset(layout.out_dir, format="parquet").to_table(columns=["key", "cls"])
    assert table.num_rows == 12                    # _webssl/ (failures, staging) is ignored
    assert sorted(table.column("key").to_pylist()) == sorted(
        f"shard-{u:06d}/{i:04d}" for u in range(3) for i in range(4))


def test_npy_layout_round_trip_with_embedding_reader(tmp_path):
    from embedding_reader import EmbeddingReader
    layout, units, _ = _setup(tmp_path, "npy", 4)
    written = {}
    for u in units:
        n = 0 if u.index == 2 else 3 + u.index          # unit 2 has no rows at all
        rows = _rows(u, n)
        written[u.id] = rows
        rec = _commit(layout, "npy", u, rows)
        if n == 0:
            assert rec.files == []
    out = layout.out_dir
    assert sorted(p.name for p in (out / "cls").iterdir()) == ["000000.npy", "000001.npy",
                                                               "000003.npy"]
    assert sorted(p.name for p in (out / "metadata").iterdir()) == [
        "000000.parquet", "000001.parquet", "000003.parquet"]
    for uid in ("000000", "000001", "000003"):
        rows = written[uid]
        for name, want in rows.features.items():
            got = np.load(out / feature_slug(name) / f"{uid}.npy")
            assert got.dtype == np.float16 and got.shape == want.shape
            assert np.array_equal(got.view(np.uint16), want.view(np.uint16))
        meta = pq.read_table(out / "metadata" / f"{uid}.parquet")
        assert meta.column("key").to_pylist() == rows.keys
        assert meta.column("source").to_pylist() == rows.sources
    assert np.load(out / "patches" / "000000.npy").ndim == 3

    want_keys = [k for uid in ("000000", "000001", "000003") for k in written[uid].keys]
    want_cls = np.concatenate([written[uid].features["cls"] for uid in ("000000", "000001", "000003")])
    for feature in ("cls", "patch_mean"):
        reader = EmbeddingReader(str(out / feature), file_format="parquet_npy",
                                 embedding_column=feature, meta_columns=["key", "source"],
                                 metadata_folder=str(out / "metadata"))
        assert reader.count == len(want_keys) and reader.dimension == D
        embs, keys, sources = [], [], []
        for batch, meta in reader(batch_size=4, show_progress=False):
            embs.append(batch)
            keys += meta["key"].tolist()
            sources += meta["source"].tolist()
        assert keys == want_keys
        assert all(s == f"/data/{k.split('/')[0]}.tar" for k, s in zip(keys, sources))
        if feature == "cls":
            assert np.array_equal(np.concatenate(embs), want_cls.astype(np.float32))

    keys, arr = read_features(out, "patches")
    assert keys == want_keys and arr.shape == (len(want_keys), T, D)


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_read_features_plan_order_only_done_units_float32(tmp_path, fmt):
    layout, units, _ = _setup(tmp_path, fmt, 5, out_dtype="float32")
    rows = {u.id: _rows(u, 2 + u.index, dtype=np.float32) for u in units}
    for uid in ("000003", "000000", "000004", "000001"):          # committed out of order
        _commit(layout, fmt, units[int(uid)], rows[uid])            # 000002 never finishes
    order = ("000000", "000001", "000003", "000004")
    for feature in ("cls", "patch_grid:2", "patch_grid_2", "layers:2"):
        keys, arr = read_features(layout.out_dir, feature)
        assert keys == [k for uid in order for k in rows[uid].keys]
        want = np.concatenate([rows[uid].features[feature.replace("_2", ":2")] for uid in order])
        assert arr.dtype == np.float32 and np.array_equal(arr, want)
    with pytest.raises(UsageError, match="not in"):
        read_features(layout.out_dir, "layers:4")


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_iter_features_one_unit_at_a_time_npy_mapped(tmp_path, fmt):
    from webssl_cli import iter_features
    layout, units, _ = _setup(tmp_path, fmt, 3, out_dtype="float32")
    rows = {u.id: _rows(u, 2 + u.index, dtype=np.float32) for u in units}
    for uid in ("000002", "000000"):                          # 000001 never finishes
        _commit(layout, fmt, units[int(uid)], rows[uid])
    got = list(iter_features(layout.out_dir, "patches", mmap=True))
    assert [u.unit_id for u in got] == ["000000", "000002"]
    for u in got:
        assert u.keys == rows[u.unit_id].keys and u.unit_name == units[int(u.unit_id)].name
        assert np.array_equal(u.array, rows[u.unit_id].features["patches"])
        assert isinstance(u.array, np.memmap) == (fmt == "npy")
    keys, arr = read_features(layout.out_dir, "patches")
    assert keys == [k for u in got for k in u.keys]
    assert np.array_equal(arr, np.concatenate([u.array for u in got]))


def test_read_features_empty_folder_and_no_manifest(tmp_path):
    layout, _, _ = _setup(tmp_path, "parquet", 2)
    keys, arr = read_features(layout.out_dir)
    assert keys == [] and arr.shape == (0,) and arr.dtype == np.float16
    with pytest.raises(UsageError, match="no webssl plan"):
        read_features(tmp_path / "elsewhere")


def test_rows_must_be_aligned(tmp_path):
    layout, units, _ = _setup(tmp_path, "parquet", 1)
    rows = _rows(units[0], 3)
    rows.sources = rows.sources[:2]
    with pytest.raises(ValueError, match="3 keys"):
        write_unit(layout, "parquet", units[0], rows, {})
    assert not any(layout.staging_dir.iterdir())
