"""Input stage of ``webssl extract``: plan the run's units and read each unit's samples.

``plan_units(cfg)`` turns every ``--input`` (folder, list file, parquet, WebDataset tar shards
as a file / folder / glob / brace pattern / ``s3://`` prefix / ``http(s)://`` URL / ``pipe:``
command) into :class:`~webssl_cli.units.Unit` records, or raises ``UsageError`` (exit 2)
naming the input, before any model is loaded.

``iter_samples(unit, cfg, part, n_parts)`` yields :class:`~webssl_cli.units.RawSample` in unit
order. A sample that cannot be read comes out with ``data=None`` and ``error``/``error_type``
(never raised, never skipped); a unit whose source fails mid-stream raises :class:`ReadError`
after yielding the samples read before the failure.

Keys, unique within a run: files -> path relative to ``unit.source`` (the key root) or the URL;
tar -> ``"<shard name>/<__key__>"``; parquet -> the ``--key-column`` value or
``"<unit name>/<row>"``; repeats within a unit get ``#2``, ``#3``... (see docs/output-format.md).
"""
from __future__ import annotations

from typing import Iterator

from ..config import InputConfig
from ..units import RawSample, Unit
from .errors import ReadError
from .files_reader import iter_file_samples
from .parquet_reader import iter_parquet_samples
from .planner import plan_units
from .tar_reader import iter_tar_samples

__all__ = ["ReadError", "iter_samples", "plan_units"]


def iter_samples(unit: Unit, cfg: InputConfig, part: int = 0,
                 n_parts: int = 1) -> Iterator[RawSample]:
    """Samples of ``unit``; for splittable units only part ``part`` of ``n_parts``: files with
    ``index % n_parts == part``, parquet rows in the ranges of ``parquet_reader.part_ranges``
    (row groups dealt to parts). The parts of a unit hold each of its samples once.

    Tar units are read as one stream: ``n_parts`` must be 1 for them (ValueError otherwise).
    """
    if n_parts < 1 or not 0 <= part < n_parts:
        raise ValueError(f"part {part} of {n_parts} parts is not a valid split")
    if unit.kind == "tar":
        if n_parts != 1:
            raise ValueError(f"unit {unit.id} ({unit.source}) is a tar stream and cannot be "
                             "read in parts; read it with n_parts=1")
        return iter_tar_samples(unit, cfg)
    if unit.kind == "files":
        return iter_file_samples(unit, cfg, part, n_parts)
    if unit.kind == "parquet":
        return iter_parquet_samples(unit, cfg, part, n_parts)
    raise ValueError(f"unit {unit.id}: unknown kind {unit.kind!r}")
