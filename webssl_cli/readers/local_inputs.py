"""Planned pieces of local inputs: folders (recursive scan), single files, text lists of
paths/URLs, parquet files (footer read for the row count and the image column)."""
from __future__ import annotations

import json
import logging
import os
import stat
from collections import Counter

from ..config import InputConfig
from ..errors import UsageError
from .kinds import (IMAGE_EXTS, UNREAD_IMAGE_EXTS, FileSet, ParquetSource, Piece, TarShard,
                    is_list, kind_of, pipe_name, stem)
from .parquet_reader import check_key_column, find_image_column, open_parquet
from .retry import NetworkUnavailable, TransientNetworkError
from .storage import is_url, local_path

log = logging.getLogger("webssl.readers")


def expand_local(spec: str, path: str, cfg: InputConfig) -> list[Piece]:
    if os.path.isdir(path):
        return from_folder(spec, os.path.abspath(path), cfg)
    if not os.path.exists(path):
        raise UsageError(f"--input {spec}: no such file or folder")
    kind = kind_of(path)
    if kind == "tar":
        return [local_shard(spec, path)]
    if kind == "parquet":
        return [parquet_piece(spec, os.path.abspath(path), cfg)]
    if kind == "image":
        full = os.path.abspath(path)
        return [FileSet(os.path.dirname(full) + "/", stem(full), [full])]
    if is_list(path):
        return from_list_file(spec, path, cfg)
    raise UsageError(f"--input {spec}: unknown input kind: give a folder, an image "
                     f"({', '.join(IMAGE_EXTS)}), a tar shard (.tar, .tar.gz, .tgz), a parquet "
                     "file (.parquet, .pq) or a list of paths/URLs (.txt, .lst, .list)")


def from_folder(spec: str, root: str, cfg: InputConfig) -> list[Piece]:
    images, tars, parquets = scan_folder(root)
    if images and (tars or parquets):
        raise UsageError(f"--input {spec}: the folder mixes {_count(images, 'images')} with "
                         f"{_count(tars, 'tar shards')} and {_count(parquets, 'parquet files')}; "
                         "pass them as separate inputs (e.g. a glob)")
    if tars and parquets:
        raise UsageError(f"--input {spec}: the folder mixes {_count(tars, 'tar shards')} with "
                         f"{_count(parquets, 'parquet files')}; pass them as separate inputs")
    if images:
        return [FileSet(root.rstrip("/") + "/", os.path.basename(root.rstrip("/")) or "root",
                        images, spec, scanned=True)]
    if tars:
        return [local_shard(spec, p) for p in tars]
    if parquets:
        return [parquet_piece(spec, p, cfg) for p in parquets]
    raise UsageError(f"--input {spec}: the folder has no images ({', '.join(IMAGE_EXTS)}), "
                     "no .tar shards and no .parquet files")


def _count(paths: list[str], what: str) -> str:
    return f"{len(paths)} {what}" + (f" (first: {paths[0]})" if paths else "")


def scan_folder(root: str) -> tuple[list[str], list[str], list[str]]:
    """(images, tar shards, parquet files) under ``root``, recursive, each sorted by path.

    Follows directory symlinks but enters each real directory once (no symlink loops). Files of
    image types that are not decoded (``UNREAD_IMAGE_EXTS``) are counted in a warning. A
    sub-folder that holds a webssl manifest (``<folder>/<manifest>/run.json``, e.g.
    ``_webssl/run.json``) is an output folder of webssl and is skipped with all it holds.
    """
    found: dict[str, list[str]] = {"image": [], "tar": [], "parquet": []}
    seen: set[tuple[int, int]] = set()
    outputs: list[str] = []
    unread: Counter[str] = Counter()

    def onerror(exc: OSError) -> None:
        if os.path.abspath(str(exc.filename)) == root:
            raise UsageError(f"--input {root}: cannot read the folder: {exc.strerror}")
        log.warning("%s: cannot read %s (%s): its files are not part of the run",
                    root, exc.filename, exc.strerror)

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            dirnames[:] = []
            continue
        seen.add(ident)
        if "run.json" in filenames and dirpath != root and \
                _is_run_config(os.path.join(dirpath, "run.json")):
            outputs.append(os.path.dirname(dirpath))   # a manifest: its parent is an output
            log.info("%s: skipped, a webssl output folder (it holds %s/run.json)",
                     outputs[-1], os.path.basename(dirpath))
            dirnames[:] = []
            continue
        dirnames.sort()
        for name in filenames:
            kind = kind_of(name)
            if kind is not None:
                found[kind].append(os.path.join(dirpath, name))
            elif name.lower().endswith(UNREAD_IMAGE_EXTS):
                unread[os.path.splitext(name)[1].lower()] += 1
    if unread:
        log.warning("--input %s: %s not read: webssl decodes JPEG, PNG, WebP, GIF, BMP and TIFF "
                    "(convert the others)", root,
                    ", ".join(f"{n} {ext} file{'s' * (n > 1)}" for ext, n in unread.most_common()))
    if outputs:
        skip = tuple(o.rstrip("/") + "/" for o in outputs if o.rstrip("/") != root.rstrip("/"))
        found = {k: [p for p in v if not p.startswith(skip)] for k, v in found.items()}
    return sorted(found["image"]), sorted(found["tar"]), sorted(found["parquet"])


def _is_run_config(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(1 << 20))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "fingerprint" in doc and "fields" in doc


def local_shard(spec: str, path: str) -> TarShard:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):   # a FIFO: opening it would wait
            raise UsageError(f"--input {spec}: shard {path} is not a regular file (a FIFO or "
                             f"device); read a stream with --input 'pipe:cat {path}'")
        size = os.path.getsize(path)
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UsageError(f"--input {spec}: cannot read shard {path}: {exc.strerror}") from None
    if size == 0:   # planned all the same: its unit fails (exit 3), the other shards run
        log.warning("--input %s: shard %s is empty (0 bytes); its unit will fail", spec, path)
    return TarShard(os.path.abspath(path), stem(path))


def from_list_file(spec: str, path: str, cfg: InputConfig) -> list[Piece]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise UsageError(f"--input {spec}: cannot read: {exc.strerror}") from None
    base_dir = os.path.dirname(os.path.abspath(path))
    return from_lines(spec, decode_list(spec, raw), base_dir, stem(path), cfg)


def decode_list(spec: str, raw: bytes) -> str:
    """The text of a list file: UTF-8, with or without a byte-order mark.

    Bytes that are not UTF-8 are kept as they are (as lone surrogates, like ``os.fsdecode``):
    a path written by ``find`` on a file system with Latin-1 names is the file's real name.
    Keys and sources escape them as ``\\xNN``; a warning names the first such line.
    """
    if b"\x00" in raw[:65536]:
        raise UsageError(f"--input {spec}: is not a UTF-8 text list of paths/URLs (one per "
                         "line; it holds NUL bytes); save the list as UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        log.warning("--input %s: line %d (and maybe others) is not UTF-8: its bytes are used as "
                    "the file name as they are (keys and sources show them as \\xNN)", spec, line)
        return raw.decode("utf-8-sig", "surrogateescape")


def from_lines(spec: str, text: str, base_dir: str, name: str,
                cfg: InputConfig) -> list[Piece]:
    entries, commented = [], []
    local = not is_url(base_dir)
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if local and entry != line and os.path.lexists(os.path.join(base_dir, line)):
            entry = line    # a file whose name starts or ends with blanks
        if not entry:
            continue
        if entry.startswith("#"):
            if local and os.path.lexists(os.path.join(base_dir, entry)):
                commented.append(number)
            continue
        if not (is_url(entry) or entry.startswith("pipe:")):
            if is_url(base_dir):
                entry = base_dir.rstrip("/") + "/" + entry.lstrip("/")
            else:
                entry = os.path.normpath(os.path.join(base_dir, local_path(entry)))
        entries.append(entry)
    if commented:
        log.warning("--input %s: line %d (of %d such lines) starts with '#', a comment, though a "
                    "file has that name: it is not read; write it as ./#... to read it",
                    spec, commented[0], len(commented))
    if not entries:
        raise UsageError(f"--input {spec}: the list is empty")
    containers = [e for e in entries if e.startswith("pipe:") or kind_of(e) in ("tar", "parquet")]
    if not containers:
        return [FileSet(base_dir.rstrip("/") + "/", name, sorted(entries), spec)]
    if len(containers) < len(entries):
        listed = set(containers)
        image = next(e for e in entries if e not in listed)
        raise UsageError(f"--input {spec}: the list mixes image files (first: {image}) with "
                         f"tar shards or parquet files (first: {containers[0]}); list them in "
                         "separate files and pass each as its own --input")
    absent = [e for e in entries if not (is_url(e) or e.startswith("pipe:")
                                         or kind_of(e) == "parquet" or os.path.isfile(e))]
    if absent:
        raise UsageError(f"--input {spec}: {len(absent)} listed shards do not exist "
                         f"(first: {absent[0]})")
    return [parquet_piece(spec, e, cfg) if kind_of(e) == "parquet" and not e.startswith("pipe:")
            else TarShard(e, pipe_name(e) if e.startswith("pipe:") else stem(e))
            for e in entries]


def parquet_piece(spec: str, location: str, cfg: InputConfig) -> ParquetSource:
    try:
        pf = open_parquet(location, cfg)
        schema, rows = pf.schema_arrow, pf.metadata.num_rows
        groups = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    except UsageError:
        raise
    except TransientNetworkError as exc:
        raise NetworkUnavailable(f"--input {spec}: cannot read parquet {location}: "
                                 f"{exc.summary} (the input itself is not at fault)") from None
    except Exception as exc:   # noqa: BLE001 - pyarrow/s3fs raise many types
        raise UsageError(f"--input {spec}: cannot read parquet {location}: "
                         f"{type(exc).__name__}: {exc}") from None
    find_image_column(schema, cfg, location)
    check_key_column(schema, cfg, location)
    big = 4   # warn when a row group holds more than this many units' rows
    if groups and max(groups) > big * cfg.shard_size:
        held = (f"one row group holds all {groups[0]} rows" if len(groups) == 1 else
                f"{len(groups)} row groups hold up to {max(groups)} rows each")
        log.warning(
            "%s: its %s, more than %dx --shard-size %d: a row group is read from its start, "
            "so every unit reads its row group from the start up to its own rows (a unit near "
            "a row group's end reads nearly all of it, and every worker sharing the unit does "
            "so again). Rewrite the file with smaller row groups, e.g. "
            "pyarrow.parquet.write_table(table, path, row_group_size=%d), or raise "
            "--shard-size", location, held, big, cfg.shard_size, cfg.shard_size)
    return ParquetSource(location, stem(location), rows)

