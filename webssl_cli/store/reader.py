"""Reading features back from an output folder of either format, in plan order."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UsageError, WebsslError
from .commit import read_done_records
from .layout import OutputLayout, feature_slug
from .plan import load_plan
from .records import DoneRecord
from .repair import file_problem
from .writers import LOCAL
from .runconfig import load_run_config


def fixed_size_list_to_numpy(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Nested fixed-size-list column -> (N, d1, ..., dk) array, without copying twice."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    shape = [len(arr)]
    values: pa.Array = arr
    while pa.types.is_fixed_size_list(values.type):
        shape.append(values.type.list_size)
        values = values.flatten()
    return values.to_numpy(zero_copy_only=False).reshape(shape)


def _unit_format(layout: OutputLayout, rec: DoneRecord) -> str:
    paths = [f.path for f in rec.files]
    return "parquet" if layout.rel(layout.parquet_path(rec.unit_id)) in paths else "npy"


def _check_files(layout: OutputLayout, rec: DoneRecord) -> None:
    """WebsslError naming the unit, the file and the fix if a data file of a finished unit
    is missing or has another size than its done-record says."""
    for info in rec.files:
        why = file_problem(layout, info)
        if why is not None:
            raise WebsslError(
                f"unit {rec.unit_id} ({rec.unit_name}) of {layout.out_dir} is finished, but its "
                f"file {layout.abs(info.path)} is {why if why == 'missing' else f'changed ({why})'}"
                ": rerun the same `webssl extract` command to redo the unit (a rerun reopens "
                "finished units whose files are missing or changed)")


def _read_unit(layout: OutputLayout, rec: DoneRecord, slug: str, feature: str,
               mmap: bool = False) -> tuple[list[str], np.ndarray] | None:
    if not rec.files:
        return None                                  # npy unit with no rows
    _check_files(layout, rec)
    if _unit_format(layout, rec) == "parquet":
        path = layout.parquet_path(rec.unit_id)
        schema = pq.read_schema(path, filesystem=LOCAL)
        if slug not in schema.names:
            raise UsageError(f"feature {feature!r} is not in {path}; it has "
                             f"{', '.join(n for n in schema.names if n not in ('key', 'source', 'json'))}")
        table = pq.read_table(path, columns=["key", slug], filesystem=LOCAL)
        return table.column("key").to_pylist(), fixed_size_list_to_numpy(table.column(slug))
    npy = layout.out_dir / slug / f"{rec.unit_id}.npy"
    if not npy.is_file():
        present = sorted(Path(f.path).parts[0] for f in rec.files if f.path.endswith(".npy"))
        raise UsageError(f"feature {feature!r} is not in {layout.out_dir} (no {npy}); it has "
                         f"{', '.join(present)}")
    keys = pq.read_table(layout.npy_metadata_path(rec.unit_id), columns=["key"],
                         filesystem=LOCAL).column("key")
    return keys.to_pylist(), np.load(npy, allow_pickle=False, mmap_mode="r" if mmap else None)


@dataclass(frozen=True)
class UnitFeatures:
    unit_id: str
    unit_name: str
    keys: list[str]
    array: np.ndarray            # (rows, ...) in the out dtype; a read-only memmap (npy, mmap)


def iter_features(out_dir: str | Path, feature: str = "cls", manifest_name: str = "_webssl",
                  mmap: bool = False) -> Iterator[UnitFeatures]:
    """One finished unit's keys and ``feature`` array at a time, in plan order: for outputs
    too large to hold at once (``patches`` of millions of images). ``mmap=True`` maps NPY
    files instead of reading them (Parquet units are always read). Units without rows are
    skipped; unfinished units are not there yet."""
    layout = OutputLayout(out_dir, manifest_name)
    plan = load_plan(layout)
    if plan is None:
        raise UsageError(f"{layout.out_dir} has no webssl plan ({layout.plan_path}): not an "
                         "output folder of `webssl extract`, or another --manifest-name")
    slug = feature_slug(feature)
    done = read_done_records(layout)
    for unit in plan:
        rec = done.get(unit.id)
        if rec is None:
            continue
        try:
            got = _read_unit(layout, rec, slug, feature, mmap)
        except FileNotFoundError:        # removed while being read
            _check_files(layout, rec)
            raise
        if got is None:
            continue
        if len(got[0]) != len(got[1]):
            raise WebsslError(f"unit {unit.id} of {layout.out_dir}: {len(got[0])} keys but "
                              f"{len(got[1])} rows of {feature}; the folder is damaged")
        yield UnitFeatures(unit.id, unit.name, got[0], got[1])


def read_features(out_dir: str | Path, feature: str = "cls",
                  manifest_name: str = "_webssl") -> tuple[list[str], np.ndarray]:
    """(keys, array) of one feature over all finished units, concatenated in plan order.

    ``feature`` is the name given to --features (``patch_grid:4``) or its column/folder
    name (``patch_grid_4``). The array has the out dtype and shape (rows, ...). Everything
    is loaded into memory (about twice the result's size at peak): for larger outputs use
    :func:`iter_features`, one unit at a time.
    """
    keys: list[str] = []
    parts: list[np.ndarray] = []
    for unit in iter_features(out_dir, feature, manifest_name):
        keys += unit.keys
        parts.append(unit.array)
    if not parts:
        return [], np.zeros((0,), dtype=_empty_dtype(OutputLayout(out_dir, manifest_name)))
    return keys, np.concatenate(parts, axis=0)


def _empty_dtype(layout: OutputLayout) -> str:
    config = load_run_config(layout)
    dtype = (config.fields.get("out_dtype") if config else None) or "float16"
    return dtype if dtype in ("float16", "float32") else "float16"


def read_provenance(path: str | Path) -> dict:
    """The provenance JSON stored in a part/metadata parquet file's schema metadata."""
    meta = pq.read_schema(path, filesystem=LOCAL).metadata or {}
    raw = meta.get(b"webssl")
    if raw is None:
        raise UsageError(f"{path} has no webssl provenance metadata")
    return json.loads(raw)
