"""Writers of one unit's rows: Parquet (one part file) or NPY (embedding-reader layout).

Both stage their files (see staging.py); ``commit_unit`` publishes them. Multi-dimensional
features (patches (T,D), layers (K,D), patch_grid (N*N,D)) keep their shape: in Parquet
as nested fixed-size lists (the Arrow type carries every dimension; the field metadata
repeats it as ``webssl.shape``), in NPY as a 3-D array in the feature's own folder.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..units import Failure, Unit, escape_undecodable, json_text_utf8
from .layout import OutputLayout, check_format, feature_slug
from .ordered_rows import OrderedRows
from .records import FileInfo
from .staging import new_attempt_dir, stage_file

METADATA_KEY = b"webssl"      # schema metadata key holding the provenance JSON


@dataclass
class UnitRows:
    """The rows of one unit, in output order. Features are (N, ...) in the out dtype: arrays,
    or :class:`OrderedRows` (read a block at a time while the file is written)."""

    keys: list[str]
    sources: list[str]
    features: dict[str, np.ndarray | OrderedRows]
    json: list[dict[str, Any] | None] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def validate(self, unit: Unit) -> None:
        n = len(self.keys)
        sizes = {"sources": len(self.sources), **{f: len(a) for f, a in self.features.items()}}
        if self.json is not None:
            sizes["json"] = len(self.json)
        bad = {k: v for k, v in sizes.items() if v != n}
        if bad:
            raise ValueError(f"unit {unit.id}: {n} keys but {bad} rows")
        for f, a in self.features.items():
            if a.ndim < 2:
                raise ValueError(f"unit {unit.id}: feature {f} must be (rows, ...), got {a.shape}")


def _fixed_size_list(arr: np.ndarray) -> pa.Array:
    """(N, d1, ..., dk) -> nested fixed_size_list (outermost d1); zero-copy where possible."""
    out: pa.Array = pa.array(np.ascontiguousarray(arr).reshape(-1))
    for size in reversed(arr.shape[1:]):
        out = pa.FixedSizeListArray.from_arrays(out, int(size))
    return out


def _meta_columns(rows: UnitRows, a: int, b: int) -> tuple[list[pa.Array], list[pa.Field]]:
    # the readers escape names that are not UTF-8 already; again here, so no producer's
    # lone surrogate (Python's stand-in for such bytes) can fail the unit's write
    arrays = [pa.array([escape_undecodable(k) for k in rows.keys[a:b]], pa.string()),
              pa.array([escape_undecodable(s) for s in rows.sources[a:b]], pa.string())]
    fields = [pa.field("key", pa.string(), nullable=False), pa.field("source", pa.string())]
    if rows.json is not None:
        # a sidecar's "\udcXX" escapes come back as lone surrogates: written as escapes again
        arrays.append(pa.array([None if j is None else
                                json_text_utf8(json.dumps(j, ensure_ascii=False, allow_nan=False))
                                for j in rows.json[a:b]], pa.string()))
        fields.append(pa.field("json", pa.string()))
    return arrays, fields


def _schema_metadata(unit: Unit, rows: UnitRows, provenance: dict[str, Any]) -> dict[bytes, bytes]:
    info = {"provenance": provenance,
            "unit": {"id": unit.id, "index": unit.index, "name": unit.name, "source": unit.source},
            "features": {f: {"column": feature_slug(f), "shape": list(a.shape[1:]),
                             "dtype": str(a.dtype)} for f, a in rows.features.items()}}
    return {METADATA_KEY: json.dumps(info, sort_keys=True, default=str).encode()}


# paths, never URIs: a local folder named like 'c:' or 'x:' is not a filesystem scheme
LOCAL = pafs.LocalFileSystem()
ROW_GROUP_BYTES = 32 << 20    # ~32 MiB row groups: readers stream big patch files, and writing
                              # one holds ~3.5x that (the block, pyarrow's buffers)


def _block_rows(rows: UnitRows, with_features: bool) -> int:
    """Rows per row group (and per block read from the features): about ROW_GROUP_BYTES."""
    n = max(1, len(rows))
    per_row = 8 + sum(len(k) + len(s) for k, s in zip(rows.keys, rows.sources)) // n
    if rows.json is not None:      # --keep-json sidecars: estimated from the first rows
        sample = rows.json[:64]
        per_row += sum(len(json.dumps(j, default=str)) for j in sample if j) // max(1, len(sample))
    if with_features:
        per_row += sum(a.dtype.itemsize * int(np.prod(a.shape[1:]))
                       for a in rows.features.values())
    return max(1, min(1 << 20, ROW_GROUP_BYTES // per_row))


def _parquet_block(rows: UnitRows, a: int, b: int, schema: pa.Schema | None,
                   with_features: bool, metadata: dict[bytes, bytes]) -> pa.Table:
    """Rows ``a..b`` as a table; the features are read from ``rows`` for this block only."""
    arrays, fields = _meta_columns(rows, a, b)
    if with_features:
        for name, feat in rows.features.items():
            col = _fixed_size_list(feat[a:b])
            arrays.append(col)
            fields.append(pa.field(feature_slug(name), col.type, metadata={
                "webssl.feature": name, "webssl.shape": json.dumps(list(feat.shape[1:])),
                "webssl.dtype": str(feat.dtype)}))
    return pa.Table.from_arrays(arrays, schema=schema or pa.schema(fields, metadata=metadata))


def _write_parquet(path: Path, unit: Unit, rows: UnitRows, provenance: dict[str, Any],
                   with_features: bool) -> None:
    """One Parquet file, one row group per block of rows: a unit's features are never all
    in one table (a unit of patches can hold many GiB)."""
    step = _block_rows(rows, with_features)
    metadata = _schema_metadata(unit, rows, provenance)
    first = _parquet_block(rows, 0, min(step, len(rows)), None, with_features, metadata)
    with pq.ParquetWriter(path, first.schema, filesystem=LOCAL, use_dictionary=["source"],
                          write_statistics=["key", "source"]) as writer:
        writer.write_table(first, row_group_size=step)
        for a in range(step, len(rows), step):
            writer.write_table(_parquet_block(rows, a, min(a + step, len(rows)), first.schema,
                                              with_features, metadata), row_group_size=step)


def _write_npy(path: Path, feat: np.ndarray | OrderedRows) -> None:
    """The bytes ``np.save`` writes, streamed a block at a time."""
    header = {"descr": np.lib.format.dtype_to_descr(feat.dtype), "fortran_order": False,
              "shape": tuple(feat.shape)}
    step = max(1, ROW_GROUP_BYTES // max(1, feat.dtype.itemsize * int(np.prod(feat.shape[1:]))))
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for a in range(0, len(feat), step):
            f.write(memoryview(np.ascontiguousarray(feat[a:a + step])).cast("B"))


def write_unit(layout: OutputLayout, fmt: str, unit: Unit, rows: UnitRows,
               provenance: dict[str, Any]) -> list[FileInfo]:
    """Stage the unit's data files; pass the result to ``commit_unit`` (in a DoneRecord).

    parquet: ``part-<id>.parquet`` with key, source, [json], one column per feature.
    npy: ``<feature>/<id>.npy`` per feature + ``metadata/<id>.parquet`` (key, source, [json]);
    a unit with no rows writes no npy files (embedding-reader skips empty .npy files but
    not their metadata, which would misalign every later unit).
    """
    check_format(fmt)
    rows.validate(unit)
    if fmt == "npy" and len(rows) == 0:
        return []
    attempt = new_attempt_dir(layout, unit.id)
    try:
        if fmt == "parquet":
            return [stage_file(layout, attempt, layout.parquet_path(unit.id),
                               lambda p: _write_parquet(p, unit, rows, provenance, True))]
        infos = []
        for name, arr in rows.features.items():
            infos.append(stage_file(layout, attempt, layout.npy_path(unit.id, name),
                                    lambda p, a=arr: _write_npy(p, a)))
        infos.append(stage_file(layout, attempt, layout.npy_metadata_path(unit.id),
                                lambda p: _write_parquet(p, unit, rows, provenance, False)))
        return infos
    except BaseException:
        shutil.rmtree(attempt, ignore_errors=True)
        raise


def _ledger_line(unit: Unit, f: Failure) -> str:
    """One ledger line: key and source as in the data files (undecodable bytes as ``\\xNN``),
    any other lone surrogate (in a message) as its JSON escape, so the ledger is UTF-8."""
    d = {"unit": unit.id, **f.to_dict()}
    d["key"], d["source"] = escape_undecodable(f.key), escape_undecodable(f.source)
    return json_text_utf8(json.dumps(d, ensure_ascii=False)) + "\n"


def write_failures(layout: OutputLayout, unit: Unit, failures: list[Failure]) -> FileInfo | None:
    """Stage the unit's failure ledger (JSON lines, one per failed sample); None if none."""
    if not failures:
        return None
    lines = "".join(_ledger_line(unit, f) for f in failures).encode()
    attempt = new_attempt_dir(layout, unit.id)
    try:
        return stage_file(layout, attempt, layout.failures_path(unit.id),
                          lambda p: p.write_bytes(lines))
    except BaseException:
        shutil.rmtree(attempt, ignore_errors=True)
        raise
