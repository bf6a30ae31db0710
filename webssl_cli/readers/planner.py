"""``plan_units``: every ``--input`` -> the run's list of :class:`Unit` (deterministic).

Pieces come from :mod:`.sources` in input order. Then:

* tar shards: one unit each; name = the shard's file stem;
* anything reached twice (overlapping inputs, a shard given twice) is read once, with a
  logged warning;
* image file sets: items sorted, cut every ``shard_size`` into units named ``<base>-000000``, ``<base>-000001``... Their ``source`` is
  the key root, ending in ``/``: the input's folder (or the list file's folder) when there is one
  file input, else the common parent of all of them, so that keys (paths relative to it) are
  unique over the run (with no common parent, e.g. local + S3, the source is the input's own
  folder without the final ``/`` and keys are full paths/URLs);
* parquet files: rows cut every ``shard_size``, units named ``<file stem>-000000``...

A name used twice (two folders both called ``images``, shards with the same stem) gets
``_2``, ``_3``... Indices run 0..n-1 over all units.
"""
from __future__ import annotations

import logging
import os

from ..config import InputConfig
from ..errors import UsageError
from ..units import Unit
from .kinds import FileSet, ParquetSource, Piece, TarShard
from .sources import expand_input
from .storage import is_url

log = logging.getLogger("webssl.readers")


def plan_units(cfg: InputConfig) -> list[Unit]:
    if not cfg.inputs:
        raise UsageError("no --input given: pass a folder, list file, parquet or tar shards")
    if cfg.shard_size < 1:
        raise UsageError(f"--shard-size must be at least 1 (got {cfg.shard_size})")
    pieces: list[Piece] = []
    for spec in cfg.inputs:
        got = expand_input(spec, cfg)
        if not got or all(isinstance(p, ParquetSource) and p.num_rows == 0 for p in got):
            raise UsageError(f"--input {spec}: no samples in it")
        pieces.extend(got)
    _dedupe(pieces)
    root = _key_root([p for p in pieces if isinstance(p, FileSet)])
    namer = _Namer()
    units: list[Unit] = []
    for piece in pieces:
        if isinstance(piece, TarShard):
            units.append(Unit(len(units), "tar", piece.source, namer(piece.name)))
        elif isinstance(piece, FileSet):
            source = piece.root if root is None else (root or piece.root.rstrip("/"))
            for k, start in enumerate(range(0, len(piece.items), cfg.shard_size)):
                units.append(Unit(len(units), "files", source, namer(f"{piece.base}-{k:06d}"),
                                  items=tuple(piece.items[start:start + cfg.shard_size]),
                                  scanned=piece.scanned))
        else:
            if piece.num_rows == 0:
                log.warning("%s: 0 rows, no unit", piece.source)
            for k, start in enumerate(range(0, piece.num_rows, cfg.shard_size)):
                end = min(start + cfg.shard_size, piece.num_rows)
                units.append(Unit(len(units), "parquet", piece.source,
                                  namer(f"{piece.base}-{k:06d}"), row_range=(start, end)))
    check_options_apply(cfg, units)
    return units


_KIND_OPTIONS = (("image_column", "--image-column", "parquet", "Parquet"),
                 ("key_column", "--key-column", "parquet", "Parquet"),
                 ("image_key", "--image-key", "tar", "WebDataset tar"),
                 ("keep_json", "--keep-json", "tar", "WebDataset tar"))


def check_options_apply(cfg: InputConfig, units: list[Unit]) -> None:
    """An option of one input kind given for inputs of none of that kind is a usage error:
    it would change nothing, yet be recorded in the run's settings."""
    kinds = {u.kind for u in units}
    for field, option, kind, what in _KIND_OPTIONS:
        if getattr(cfg, field) and kind not in kinds:
            raise UsageError(f"{option} applies to {what} inputs, and none of the inputs is "
                             "one: drop it")


def _dedupe(pieces: list[Piece]) -> None:
    """Read every shard, parquet file and image file once, however many inputs reach it
    (through folder symlinks too: ``--input imgs --input imgs/nested`` with ``imgs/link ->
    nested``)."""
    seen: set[str] = set()
    same = _SameFile()
    kept_pieces: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, FileSet):
            kept = []
            for item in piece.items:
                ident = same(item)
                if ident not in seen:
                    seen.add(ident)
                    kept.append(item)
            if len(kept) != len(piece.items):
                n = len(piece.items) - len(kept)
                log.warning("%s: %d %s a file already in the run and %s read once",
                            f"--input {piece.spec}" if piece.spec else piece.root, n,
                            "entries repeat" if n > 1 else
                            "entry repeats", "are" if n > 1 else "is")
            piece.items = kept
            if kept:
                kept_pieces.append(piece)
        elif same(piece.source) in seen:
            log.warning("%s is given twice and is read once", piece.source)
        else:
            seen.add(same(piece.source))
            kept_pieces.append(piece)
    pieces[:] = kept_pieces


class _SameFile:
    """``same(location)``: a local path with its folder's symlinks resolved, one
    ``realpath`` per folder (a file symlink stays a file of its own folder, as the folder
    scan keeps it); URLs and ``pipe:`` commands as they are."""

    def __init__(self) -> None:
        self.real: dict[str, str] = {}

    def __call__(self, location: str) -> str:
        if is_url(location) or location.startswith("pipe:"):
            return location
        folder, name = os.path.split(location)
        real = self.real.get(folder)
        if real is None:
            real = self.real[folder] = os.path.realpath(folder)
        return os.path.join(real, name)


def _key_root(sets: list[FileSet]) -> str | None:
    """The common key root of several file sets: None when each keeps its own (one root),
    "" when there is none (local + S3, two buckets): then keys are the full paths/URLs."""
    roots = sorted({s.root for s in sets})
    if len(roots) <= 1:
        return None
    prefix = os.path.commonprefix(roots)
    common = prefix[: prefix.rfind("/") + 1]
    if not common or common.endswith("//"):   # e.g. local + s3: keys are the full paths
        return ""
    return common


class _Namer:
    """Unique unit names: a repeated name gets ``_2``, ``_3``... Each name remembers the
    last suffix it gave (12,000 shards all called ``data.tar`` or ``pipe`` took 45 s when
    every one searched from ``_2`` again)."""

    def __init__(self) -> None:
        self.used: set[str] = set()
        self.last: dict[str, int] = {}

    def __call__(self, name: str) -> str:
        name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "unit"
        candidate, n = name, self.last.get(name, 1)
        if n > 1:
            candidate = f"{name}_{n}"
        while candidate in self.used:
            n += 1
            candidate = f"{name}_{n}"
        self.last[name] = n
        self.used.add(candidate)
        return candidate
