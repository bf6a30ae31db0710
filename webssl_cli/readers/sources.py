"""Expanding one ``--input`` string into planned pieces (before unit indices are given).

Each input becomes tar shards, image file sets or parquet files (see :mod:`.planner` for the
cutting into units). Kinds, by what the input is:

* ``pipe:CMD`` (braces expanded into several commands) -> one tar shard each;
* a pattern (glob ``* ? [`` or braces) over local paths or ``s3://`` -> its matches, sorted
  (brace-expanded names must all exist; a local path that exists as written is not a pattern);
* ``s3://bucket/prefix/`` -> everything under it, listed;
* ``http(s)://`` URL(s) -> by extension (the first one is checked with a HEAD request);
* a local folder (recursive) -> its images, or else its ``.tar`` shards, or else its parquet
  files (images mixed with shards or parquet is refused: pass them as separate inputs);
* a local file: ``.tar/.tar.gz/.tgz`` shard, ``.parquet``, an image, a ``.txt/.lst/.list``
  text list of paths/URLs (UTF-8, one per line, ``#`` comments; relative paths are relative
  to the list's folder; a list of only tar shards / parquet files is read as those; images
  listed with them are refused), else a usage error.
* folders skip the output folders of webssl inside them (a sub-folder with
  ``<manifest>/run.json``).
"""
from __future__ import annotations

import glob as globlib
import logging
import os

from ..config import InputConfig
from ..errors import UsageError
from .kinds import FileSet, Piece, TarShard, kind_of, pipe_name, stem
from .local_inputs import expand_local, from_folder, local_shard, parquet_piece
from .patterns import expand_braces, has_brace, has_glob, static_dir
from .remote_inputs import expand_http, expand_s3, glob_s3, missing_s3
from .storage import is_http, local_path

log = logging.getLogger("webssl.readers")


def expand_input(spec: str, cfg: InputConfig) -> list[Piece]:
    """The pieces of one ``--input`` (UsageError naming it when missing, empty or unknown)."""
    if spec.startswith("pipe:"):
        return [TarShard(cmd, pipe_name(cmd)) for cmd in expand_braces(spec)]
    if is_http(spec):
        return expand_http(spec, expand_braces(spec), cfg)
    if spec.startswith("s3://"):
        return expand_pattern(spec, cfg) if has_brace(spec) or has_glob(spec) else \
            expand_s3(spec, cfg)
    if (has_brace(spec) or has_glob(spec)) and not os.path.exists(local_path(spec)):
        return expand_pattern(spec, cfg)
    return expand_local(spec, local_path(spec), cfg)


def expand_pattern(spec: str, cfg: InputConfig) -> list[Piece]:
    remote = spec.startswith("s3://")
    names = expand_braces(spec)
    matches: list[str] = []
    literal = [n for n in names if not has_glob(n)]
    missing = missing_s3(literal, cfg, spec) if remote else [
        n for n in literal if not os.path.exists(local_path(n))]
    if missing:
        raise UsageError(f"--input {spec}: {len(missing)} of {len(names)} names do not exist "
                         f"(first: {missing[0]})")
    for name in names:
        if has_glob(name):
            matches.extend(glob_s3(name, cfg, spec) if remote else
                           sorted(globlib.glob(local_path(name), recursive=True)))
        else:
            matches.append(name if remote else local_path(name))
    if not matches:
        raise UsageError(f"--input {spec}: matches nothing")
    pieces: list[Piece] = []
    images: list[str] = []
    ignored = 0
    for m in matches:
        kind = kind_of(m)
        if not remote and os.path.isdir(m):
            pieces.extend(from_folder(m, os.path.abspath(m), cfg))
        elif kind == "tar":
            pieces.append(TarShard(m, stem(m)) if remote else local_shard(spec, m))
        elif kind == "parquet":
            pieces.append(parquet_piece(spec, m if remote else os.path.abspath(m), cfg))
        elif kind == "image":
            images.append(m if remote else os.path.abspath(m))
        else:
            ignored += 1
    if ignored:
        log.warning("--input %s: %d matches are neither images, tar shards nor parquet files "
                    "and are ignored", spec, ignored)
    if images:
        root = static_dir(spec)
        if not remote:
            root = os.path.abspath(local_path(root or ".")).rstrip("/") + "/"
        pieces.append(FileSet(root, stem(root) or "images", sorted(images)))
    if not pieces:
        raise UsageError(f"--input {spec}: matches no images, tar shards or parquet files")
    return pieces
