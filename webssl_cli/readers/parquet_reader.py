"""Parquet files with image bytes (Hugging Face datasets, img2dataset) -> RawSamples.

The image column is ``--image-column`` if given (``"image"`` or ``"image.bytes"``), else the
first of ``image, img, jpg, jpeg, png, webp, image_bytes, bytes`` that holds images, else the
first column that does. A column holds images when it is binary, or a struct with a binary
``bytes`` field (the HF ``Image`` feature). Keys: ``--key-column`` values as strings, else
``"<unit name>/<row in the file>"``; keys are unique within a unit: a value that repeats in the
unit gets ``#2``, ``#3``..., a null value becomes ``"<unit name>/<row>"``, and made-up keys
never take a value the unit holds (every part of a unit reads the whole unit's key column, so
parts agree). A null image is yielded with ``data=None``
(``MissingImage``); a file that fails while being read raises :class:`ReadError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..config import InputConfig
from ..errors import UsageError
from ..units import RawSample, Unit, escape_undecodable
from .errors import ReadError
from .http_ranges import open_http_file
from .keys import KeyDeduper
from .storage import is_http, local_path, s3_filesystem

PREFERRED_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes", "bytes")


@dataclass(frozen=True)
class ImageColumn:
    column: str
    field: str | None = None     # "bytes" inside an HF Image struct


def open_parquet(location: str, cfg: InputConfig) -> pq.ParquetFile:
    if location.startswith("s3://"):
        return pq.ParquetFile(s3_filesystem(cfg).open(location, "rb"))
    if is_http(location):
        return pq.ParquetFile(open_http_file(location))
    path = local_path(location)
    if escape_undecodable(path) != path:   # a name that is not UTF-8: pyarrow cannot open it
        return pq.ParquetFile(open(path, "rb"))
    return pq.ParquetFile(path)


def find_image_column(schema: pa.Schema, cfg: InputConfig, where: str) -> ImageColumn:
    """The image column of ``schema``; UsageError naming the columns when there is none."""
    if cfg.image_column:
        name = cfg.image_column
        col = _image_column(schema, name) or (
            _image_column(schema, name.split(".", 1)[0], name.split(".", 1)[1])
            if "." in name else None)
        if col is None and name not in schema.names and name.split(".", 1)[0] not in schema.names:
            raise UsageError(f"{where}: --image-column {name!r} does not exist; "
                             f"columns: {_describe(schema)}")
        if col is None:
            raise UsageError(f"{where}: --image-column {name!r} is not a binary column nor an "
                             f"image struct with a binary field; columns: {_describe(schema)}. "
                             f"{_BYTES_ONLY}")
        return col
    for name in PREFERRED_COLUMNS + tuple(schema.names):
        col = _image_column(schema, name)
        if col is not None:
            return col
    nested = [f"{f.name}.{sub.name}" for f in schema if pa.types.is_struct(f.type)
              for sub in f.type if _is_binary(sub.type)]
    advice = (f"if {nested[0]!r} holds the images, name it with --image-column {nested[0]}"
              if nested else _BYTES_ONLY)
    raise UsageError(f"{where}: no column with image bytes; columns: {_describe(schema)}. "
                     f"{advice}")


_BYTES_ONLY = ("webssl reads image bytes only (a binary column, or a struct with a binary "
               "'bytes' field as in Hugging Face datasets); it does not fetch paths or URLs "
               "from string columns: list those in a .txt file and pass it as --input")


def check_key_column(schema: pa.Schema, cfg: InputConfig, where: str) -> None:
    if cfg.key_column and cfg.key_column not in schema.names:
        raise UsageError(f"{where}: --key-column {cfg.key_column!r} does not exist; "
                         f"columns: {_describe(schema)}")


def iter_parquet_samples(unit: Unit, cfg: InputConfig, part: int,
                         n_parts: int) -> Iterator[RawSample]:
    start, end = unit.row_range or (0, 0)
    done = 0
    try:
        pf = open_parquet(unit.source, cfg)
        col = find_image_column(pf.schema_arrow, cfg, unit.source)
        unit_keys = _unit_keys(pf, unit, cfg.key_column) if cfg.key_column else None
        columns = [col.column]
        first_row = 0
        for rg in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(rg).num_rows
            lo, hi = max(start, first_row), min(end, first_row + n)
            if lo < hi:
                table = pf.read_row_group(rg, columns=columns)
                picked = [row for row in range(lo, hi) if (row - start) % n_parts == part]
                rel = pa.array([row - first_row for row in picked], type=pa.int64())
                images = _bytes_list(table.column(col.column).take(rel), col.field)
                for row, data in zip(picked, images):
                    key = (unit_keys[row - start] if unit_keys is not None
                           else f"{unit.name}/{row}")
                    yield _sample(unit, row, data, key, col)
                    done += 1
            first_row += n
            if first_row >= end:
                break
    except UsageError as exc:
        raise ReadError(unit, str(exc)) from None
    except Exception as exc:   # noqa: BLE001 - pyarrow, s3fs and HTTP errors of every kind
        raise ReadError(unit, f"{type(exc).__name__}: {exc} (after {done} rows)") from None


def _unit_keys(pf: pq.ParquetFile, unit: Unit, key_column: str) -> list[str]:
    """Unique keys of every row of ``unit`` (see the module docstring), in row order."""
    start, end = unit.row_range or (0, 0)
    groups, first_row, offset = [], 0, 0
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if first_row < end and first_row + n > start:
            if not groups:
                offset = start - first_row
            groups.append(rg)
        first_row += n
    values = (pf.read_row_groups(groups, columns=[key_column]).column(key_column)
              .to_pylist()[offset:offset + end - start] if groups else [])
    real = [None if v is None else str(v) for v in values]
    unique = KeyDeduper(reserved={k for k in real if k is not None})
    return [unique(k) if k is not None else unique.made(f"{unit.name}/{start + i}")
            for i, k in enumerate(real)]


def _sample(unit: Unit, row: int, data: bytes | None, key_text: str,
            col: ImageColumn) -> RawSample:
    index = row - (unit.row_range or (0, 0))[0]
    source = escape_undecodable(unit.source)
    if data is None:
        name = col.column + (f".{col.field}" if col.field else "")
        return RawSample(index=index, key=key_text, source=source, data=None,
                         error_type="MissingImage", error=f"row {row}: {name} is null")
    return RawSample(index=index, key=key_text, source=source, data=data)


def _bytes_list(array: pa.ChunkedArray, field: str | None) -> list[bytes | None]:
    combined = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if field is not None:
        combined = combined.field(field)
        # a null struct row has a (possibly non-null) child: honour the parent's validity
        parent_valid = array.is_valid().to_pylist()
        return [v if ok else None for v, ok in zip(combined.to_pylist(), parent_valid)]
    return combined.to_pylist()


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def _image_column(schema: pa.Schema, name: str, field: str | None = None) -> ImageColumn | None:
    if name not in schema.names:
        return None
    t = schema.field(name).type
    if field is None and _is_binary(t):
        return ImageColumn(name)
    if pa.types.is_struct(t):
        wanted = field or "bytes"
        idx = t.get_field_index(wanted)
        if idx >= 0 and _is_binary(t.field(idx).type):
            return ImageColumn(name, wanted)
    return None


def _describe(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name} ({f.type})" for f in schema) or "(none)"
