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

Row groups are streamed in batches, never loaded whole: a unit reads each row group it overlaps
from the row group's start (parquet cannot seek to a row) up to the unit's last row and no
further, and a worker holds one batch of images at a time. A row group of many units' rows is
thus read again by every unit in it; planning warns about such files (``local_inputs.py``).
A unit's parts (one per DataLoader worker) are row ranges cut at row-group edges
(:func:`part_ranges`), so the workers read the unit's bytes about once between them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Iterator

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


# Row groups are streamed, never loaded whole: ``pre_buffer=False`` with a read buffer makes
# pyarrow read a column chunk piece by piece as batches are decoded (the default pre-buffering
# reads every needed column chunk in full first), so a unit reads its row group only from the
# row group's start up to its own last row, and a worker holds one batch, not a row group.
LOCAL_READ_BUFFER = 1 << 20          # bytes per read of a local file
# bytes per read (one request) over S3 / HTTP, at most; less for files of smaller column
# chunks (see _remote). s3fs's own read-ahead (50 MiB blocks) is off, or every part of a unit
# would fetch the file to its end.
REMOTE_READ_BUFFER = 8 << 20
MIN_REMOTE_READ = 64 << 10
BATCH_BYTES = 16 << 20               # about this many image bytes per decoded batch...
BATCH_ROWS = 256                     # ...and at most this many rows


def open_parquet(location: str, cfg: InputConfig,
                 file: BinaryIO | None = None) -> pq.ParquetFile:
    """``location`` opened for streamed reads; ``file``: that file, already open."""
    if file is not None:
        return _streaming(file, LOCAL_READ_BUFFER)
    if location.startswith("s3://"):
        return _remote(s3_filesystem(cfg).open(location, "rb", cache_type="none"))
    if is_http(location):
        return _remote(open_http_file(location, MIN_REMOTE_READ))
    path = local_path(location)
    if escape_undecodable(path) != path:   # a name that is not UTF-8: pyarrow cannot open it
        return _streaming(open(path, "rb"), LOCAL_READ_BUFFER)
    return _streaming(path, LOCAL_READ_BUFFER)


def _streaming(source: object, buffer_size: int) -> pq.ParquetFile:
    return pq.ParquetFile(source, pre_buffer=False, buffer_size=buffer_size)


def _remote(file: BinaryIO) -> pq.ParquetFile:
    """A remote file, read in requests of its largest column chunk, within
    [MIN_REMOTE_READ, REMOTE_READ_BUFFER]: a read runs past the part's own row group by up to
    one request (pyarrow's buffered reads are not cut at the chunk's end), so requests are
    no bigger than a chunk; the footer read first is reused, not fetched again."""
    md = pq.ParquetFile(file).metadata
    largest = max((md.row_group(g).column(c).total_compressed_size
                   for g in range(md.num_row_groups) for c in range(md.num_columns)), default=0)
    size = min(REMOTE_READ_BUFFER, max(MIN_REMOTE_READ, largest))
    return pq.ParquetFile(file, metadata=md, pre_buffer=False, buffer_size=size)


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


def iter_parquet_samples(unit: Unit, cfg: InputConfig, part: int, n_parts: int, *,
                         file: BinaryIO | None = None) -> Iterator[RawSample]:
    """Part ``part`` of ``n_parts`` of ``unit``'s rows; ``file``: ``unit.source`` already open
    (the reader opens it when None)."""
    start, end = unit.row_range or (0, 0)
    done = 0
    try:
        pf = open_parquet(unit.source, cfg, file)
        col = find_image_column(pf.schema_arrow, cfg, unit.source)
        unit_keys = _unit_keys(pf, unit, cfg.key_column) if cfg.key_column else None
        for row, data in _unit_rows(pf, col, start, end, part, n_parts):
            key = unit_keys[row - start] if unit_keys is not None else f"{unit.name}/{row}"
            yield _sample(unit, row, data, key, col)
            done += 1
    except UsageError as exc:
        raise ReadError(unit, str(exc)) from None
    except Exception as exc:   # noqa: BLE001 - pyarrow, s3fs and HTTP errors of every kind
        raise ReadError(unit, f"{type(exc).__name__}: {exc} (after {done} rows)") from None


def _unit_rows(pf: pq.ParquetFile, col: ImageColumn, start: int, end: int, part: int,
               n_parts: int) -> Iterator[tuple[int, bytes | None]]:
    """(row, image bytes or None) of part ``part`` of rows ``start <= row < end``
    (:func:`part_ranges`), in row order, streamed batch by batch."""
    bounds = _group_bounds(pf)
    for lo, hi in part_ranges(bounds, start, end, part, n_parts):
        for first_row, batch in _batches(pf, col.column, lo, hi, BATCH_ROWS):
            a, b = max(lo, first_row) - first_row, min(hi, first_row + batch.num_rows) - first_row
            if a < b:   # take, not slice: a struct's field() of a slice is not offset everywhere
                rows = pa.array(range(a, b), type=pa.int64())
                yield from zip(range(first_row + a, first_row + b),
                               _bytes_list(batch.column(0).take(rows), col.field))


def part_ranges(bounds: list[tuple[int, int]], start: int, end: int, part: int,
                n_parts: int) -> list[tuple[int, int]]:
    """Row ranges of part ``part`` of ``n_parts`` of rows ``start..end-1``; ``bounds``: each
    row group's (first row, end row). The unit's rows are cut at row-group edges and the
    pieces dealt round robin, so each part reads its own row groups and the parts together
    read the unit's bytes once (parts that took every n-th row each read all of them: n
    times the unit over S3). When there are fewer pieces than parts, pieces are cut into
    slices; a slice reads its row group from the group's start (parquet cannot seek to a
    row), so one row group cut in k slices is read about (k + 1) / 2 times."""
    pieces = [(max(lo, start), min(hi, end)) for lo, hi in bounds if lo < end and hi > start]
    if len(pieces) < n_parts:
        total = sum(hi - lo for lo, hi in pieces) or 1
        cut = []
        for lo, hi in pieces:
            k = max(1, min(hi - lo, round(n_parts * (hi - lo) / total)))
            cut += [(lo + (hi - lo) * j // k, lo + (hi - lo) * (j + 1) // k) for j in range(k)]
        pieces = cut
    return pieces[part::n_parts]


def _group_bounds(pf: pq.ParquetFile) -> list[tuple[int, int]]:
    bounds, first = [], 0
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        bounds.append((first, first + n))
        first += n
    return bounds


def _batches(pf: pq.ParquetFile, column: str, start: int, end: int,
             max_rows: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(file row of the batch's first row, batch of ``column``) for the batches that overlap
    rows ``start..end-1``. A row group is read from its start (parquet cannot seek to a row
    without a page index) and reading stops with the batch that holds row ``end - 1``."""
    md = pf.metadata
    leaves = [i for i in range(md.num_columns)
              if pf.schema.column(i).path == column
              or pf.schema.column(i).path.startswith(column + ".")]
    for rg, (first_row, last) in enumerate(_group_bounds(pf)):
        if last <= start:
            continue
        if first_row >= end:
            return
        group = md.row_group(rg)
        size = sum(group.column(i).total_uncompressed_size for i in leaves)
        n = last - first_row
        rows = max(1, min(max_rows, BATCH_BYTES * n // size if size else max_rows))
        batches = pf.iter_batches(batch_size=rows, row_groups=[rg], columns=[column],
                                  use_threads=False)
        try:
            for batch in batches:
                if first_row + batch.num_rows > start:
                    yield first_row, batch
                first_row += batch.num_rows
                if first_row >= end:
                    return
        finally:
            batches.close()


def _unit_keys(pf: pq.ParquetFile, unit: Unit, key_column: str) -> list[str]:
    """Unique keys of every row of ``unit`` (see the module docstring), in row order."""
    start, end = unit.row_range or (0, 0)
    values: list[object] = []
    for first_row, batch in _batches(pf, key_column, start, end, 4 * BATCH_ROWS):
        lo = max(start, first_row) - first_row
        hi = min(end, first_row + batch.num_rows) - first_row
        values.extend(batch.column(0).slice(lo, hi - lo).to_pylist())
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
