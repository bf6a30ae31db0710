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
* a local file: ``.tar/.tar.gz/.tgz`` shard, ``.parquet``, an image, else a text list of
  paths/URLs (one per line, ``#`` comments; relative paths are relative to the list's folder;
  a list of only tar shards is a list of shards).
"""
from __future__ import annotations

import glob as globlib
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..config import InputConfig
from ..errors import UsageError
from .parquet_reader import check_key_column, find_image_column, open_parquet
from .patterns import expand_braces, has_brace, has_glob
from .storage import HTTP_TIMEOUT, http_session, is_http, is_url, local_path, s3_filesystem

log = logging.getLogger("webssl.readers")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
TAR_EXTS = (".tar", ".tar.gz", ".tgz")
PARQUET_EXTS = (".parquet", ".pq")


@dataclass
class TarShard:
    source: str
    name: str


@dataclass
class FileSet:
    root: str                     # folder the keys are relative to, ending in "/"
    base: str                     # unit name prefix
    items: list[str] = field(default_factory=list)


@dataclass
class ParquetSource:
    source: str
    base: str
    num_rows: int


Piece = TarShard | FileSet | ParquetSource


def kind_of(name: str) -> str | None:
    low = name.split("?", 1)[0].lower()
    if low.endswith(TAR_EXTS):
        return "tar"
    if low.endswith(PARQUET_EXTS):
        return "parquet"
    if low.endswith(IMAGE_EXTS):
        return "image"
    return None


def stem(name: str) -> str:
    base = name.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    for ext in TAR_EXTS + PARQUET_EXTS + IMAGE_EXTS + (".txt", ".lst", ".list"):
        if base.lower().endswith(ext):
            return base[: -len(ext)] or base
    return base


def expand_input(spec: str, cfg: InputConfig) -> list[Piece]:
    """The pieces of one ``--input`` (UsageError naming it when missing, empty or unknown)."""
    if spec.startswith("pipe:"):
        return [TarShard(cmd, _pipe_name(cmd)) for cmd in expand_braces(spec)]
    if is_http(spec):
        return _expand_http(spec, expand_braces(spec), cfg)
    if spec.startswith("s3://"):
        return _expand_pattern(spec, cfg) if has_brace(spec) or has_glob(spec) else \
            _expand_s3(spec, cfg)
    if (has_brace(spec) or has_glob(spec)) and not os.path.exists(local_path(spec)):
        return _expand_pattern(spec, cfg)
    return _expand_local(spec, local_path(spec), cfg)


# --- local -------------------------------------------------------------------------------

def _expand_local(spec: str, path: str, cfg: InputConfig) -> list[Piece]:
    if os.path.isdir(path):
        return _from_folder(spec, os.path.abspath(path), cfg)
    if not os.path.exists(path):
        raise UsageError(f"--input {spec}: no such file or folder")
    kind = kind_of(path)
    if kind == "tar":
        return [_local_shard(spec, path)]
    if kind == "parquet":
        return [_parquet(spec, os.path.abspath(path), cfg)]
    if kind == "image":
        full = os.path.abspath(path)
        return [FileSet(os.path.dirname(full) + "/", stem(full), [full])]
    return _from_list_file(spec, path, cfg)


def _from_folder(spec: str, root: str, cfg: InputConfig) -> list[Piece]:
    images, tars, parquets = scan_folder(root)
    if images and (tars or parquets):
        raise UsageError(f"--input {spec}: the folder mixes {len(images)} images with "
                         f"{len(tars)} tar shards and {len(parquets)} parquet files; "
                         "pass them as separate inputs (e.g. a glob)")
    if tars and parquets:
        raise UsageError(f"--input {spec}: the folder mixes {len(tars)} tar shards with "
                         f"{len(parquets)} parquet files; pass them as separate inputs")
    if images:
        return [FileSet(root.rstrip("/") + "/", os.path.basename(root.rstrip("/")) or "root",
                        images)]
    if tars:
        return [_local_shard(spec, p) for p in tars]
    if parquets:
        return [_parquet(spec, p, cfg) for p in parquets]
    raise UsageError(f"--input {spec}: the folder has no images ({', '.join(IMAGE_EXTS)}), "
                     "no .tar shards and no .parquet files")


def scan_folder(root: str) -> tuple[list[str], list[str], list[str]]:
    """(images, tar shards, parquet files) under ``root``, recursive, each sorted by path.

    Follows directory symlinks but enters each real directory once (no symlink loops).
    """
    found: dict[str, list[str]] = {"image": [], "tar": [], "parquet": []}
    seen: set[tuple[int, int]] = set()

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
        dirnames.sort()
        for name in filenames:
            kind = kind_of(name)
            if kind is not None:
                found[kind].append(os.path.join(dirpath, name))
    return sorted(found["image"]), sorted(found["tar"]), sorted(found["parquet"])


def _local_shard(spec: str, path: str) -> TarShard:
    try:
        size = os.path.getsize(path)
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UsageError(f"--input {spec}: cannot read shard {path}: {exc.strerror}") from None
    if size == 0:
        raise UsageError(f"--input {spec}: shard {path} is empty (0 bytes)")
    return TarShard(os.path.abspath(path), stem(path))


def _from_list_file(spec: str, path: str, cfg: InputConfig) -> list[Piece]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if b"\x00" in raw[:65536]:
            raise UnicodeDecodeError("utf-8", b"", 0, 1, "NUL byte")
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--input {spec}: unknown input kind: not a folder, an image, a "
                         f".tar shard, a .parquet file nor a text list of paths/URLs") from None
    except OSError as exc:
        raise UsageError(f"--input {spec}: cannot read: {exc.strerror}") from None
    base_dir = os.path.dirname(os.path.abspath(path))
    return _from_lines(spec, text, base_dir, stem(path), cfg)


def _from_lines(spec: str, text: str, base_dir: str, name: str,
                cfg: InputConfig) -> list[Piece]:
    entries = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if not (is_url(entry) or entry.startswith("pipe:")):
            if is_url(base_dir):
                entry = base_dir.rstrip("/") + "/" + entry.lstrip("/")
            else:
                entry = os.path.normpath(os.path.join(base_dir, local_path(entry)))
        entries.append(entry)
    if not entries:
        raise UsageError(f"--input {spec}: the list is empty")
    if all(e.startswith("pipe:") or kind_of(e) == "tar" for e in entries):
        return [TarShard(e, _pipe_name(e) if e.startswith("pipe:") else stem(e))
                for e in entries]
    return [FileSet(base_dir.rstrip("/") + "/", name, sorted(entries))]


def _parquet(spec: str, location: str, cfg: InputConfig) -> ParquetSource:
    try:
        pf = open_parquet(location, cfg)
        schema, rows = pf.schema_arrow, pf.metadata.num_rows
    except UsageError:
        raise
    except Exception as exc:   # noqa: BLE001 - pyarrow/fsspec raise many types
        raise UsageError(f"--input {spec}: cannot read parquet {location}: "
                         f"{type(exc).__name__}: {exc}") from None
    find_image_column(schema, cfg, location)
    check_key_column(schema, cfg, location)
    return ParquetSource(location, stem(location), rows)


# --- patterns ------------------------------------------------------------------------------

def _expand_pattern(spec: str, cfg: InputConfig) -> list[Piece]:
    remote = spec.startswith("s3://")
    names = expand_braces(spec)
    matches: list[str] = []
    literal = [n for n in names if not has_glob(n)]
    missing = _missing_s3(literal, cfg, spec) if remote else [
        n for n in literal if not os.path.exists(local_path(n))]
    if missing:
        raise UsageError(f"--input {spec}: {len(missing)} of {len(names)} names do not exist "
                         f"(first: {missing[0]})")
    for name in names:
        if has_glob(name):
            matches.extend(_glob_s3(name, cfg, spec) if remote else
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
            pieces.extend(_from_folder(m, os.path.abspath(m), cfg))
        elif kind == "tar":
            pieces.append(TarShard(m, stem(m)) if remote else _local_shard(spec, m))
        elif kind == "parquet":
            pieces.append(_parquet(spec, m if remote else os.path.abspath(m), cfg))
        elif kind == "image":
            images.append(m if remote else os.path.abspath(m))
        else:
            ignored += 1
    if ignored:
        log.warning("--input %s: %d matches are neither images, tar shards nor parquet files "
                    "and are ignored", spec, ignored)
    if images:
        root = _static_dir(spec)
        if not remote:
            root = os.path.abspath(local_path(root or ".")).rstrip("/") + "/"
        pieces.append(FileSet(root, stem(root) or "images", sorted(images)))
    if not pieces:
        raise UsageError(f"--input {spec}: matches no images, tar shards or parquet files")
    return pieces


def _static_dir(pattern: str) -> str:
    """The folder part of ``pattern`` before its first wildcard or brace, ending in "/"."""
    cut = min([i for i in (pattern.find(c) for c in "*?[{") if i >= 0] or [len(pattern)])
    head = pattern[:cut]
    return head[: head.rfind("/") + 1]


# --- s3 ----------------------------------------------------------------------------------

def _s3_call(spec: str, what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:   # noqa: BLE001 - botocore/s3fs raise many types
        hint = ""
        if "credential" in str(exc).lower():
            hint = " (set AWS credentials: environment, ~/.aws/credentials or a role)"
        elif "connect" in type(exc).__name__.lower() or "connect" in str(exc).lower():
            hint = " (check --s3-endpoint-url / WEBSSL_S3_ENDPOINT_URL)"
        raise UsageError(f"--input {spec}: cannot {what}: {type(exc).__name__}: {exc}{hint}") from None


def _expand_s3(spec: str, cfg: InputConfig) -> list[Piece]:
    fs = s3_filesystem(cfg)
    path = spec[len("s3://"):]
    if not spec.endswith("/") and "/" in path.strip("/") and \
            _s3_call(spec, "check the object", fs.isfile, path):
        return _s3_objects(spec, [spec], cfg, single=True)
    objects = sorted(_s3_call(spec, "list the bucket/prefix", fs.find, path))
    if not objects:
        raise UsageError(f"--input {spec}: nothing under this S3 prefix")
    return _s3_objects(spec, ["s3://" + o for o in objects], cfg, single=False)


def _s3_objects(spec: str, urls: list[str], cfg: InputConfig, single: bool) -> list[Piece]:
    kinds: dict[str | None, list[str]] = {}
    for url in urls:
        kinds.setdefault(kind_of(url), []).append(url)
    if single and None in kinds:   # a list file on S3
        text = _s3_call(spec, "read the list", s3_filesystem(cfg).cat_file, spec)
        return _from_lines(spec, text.decode("utf-8", "replace"),
                           spec.rsplit("/", 1)[0], stem(spec), cfg)
    present = [k for k in ("image", "tar", "parquet") if kinds.get(k)]
    if not present:
        raise UsageError(f"--input {spec}: no images, .tar shards or .parquet files under it")
    if len(present) > 1:
        raise UsageError(f"--input {spec}: mixes {' and '.join(present)} objects; pass them as "
                         "separate inputs (e.g. a glob)")
    if present == ["tar"]:
        return [TarShard(u, stem(u)) for u in kinds["tar"]]
    if present == ["parquet"]:
        return [_parquet(spec, u, cfg) for u in kinds["parquet"]]
    root = spec if spec.endswith("/") else (spec.rsplit("/", 1)[0] + "/" if single else spec + "/")
    return [FileSet(root, stem(root) or "images", kinds["image"])]


def _missing_s3(urls: list[str], cfg: InputConfig, spec: str) -> list[str]:
    if not urls:
        return []
    fs = s3_filesystem(cfg)
    listed: dict[str, set[str]] = {}
    missing = []
    for url in urls:
        parent = url[len("s3://"):].rsplit("/", 1)[0]
        if parent not in listed:
            listed[parent] = set(_s3_call(spec, "list the bucket/prefix", fs.ls, parent, False))
        if url[len("s3://"):] not in listed[parent]:
            missing.append(url)
    return missing


def _glob_s3(pattern: str, cfg: InputConfig, spec: str) -> list[str]:
    found = _s3_call(spec, "list the bucket/prefix", s3_filesystem(cfg).glob,
                     pattern[len("s3://"):])
    return sorted("s3://" + f for f in found)


# --- http ----------------------------------------------------------------------------------

def _expand_http(spec: str, urls: list[str], cfg: InputConfig) -> list[Piece]:
    _check_reachable(spec, urls[0])
    kinds = {kind_of(u) for u in urls}
    if kinds == {"tar"}:
        return [TarShard(u, stem(u)) for u in urls]
    if kinds == {"parquet"}:
        return [_parquet(spec, u, cfg) for u in urls]
    if kinds == {"image"}:
        root = _static_dir(spec) if len(urls) > 1 else urls[0].rsplit("/", 1)[0] + "/"
        return [FileSet(root, stem(root) or "images", sorted(urls))]
    if len(urls) == 1:   # a list of paths/URLs served over http
        with http_session() as session:
            try:
                resp = session.get(urls[0], timeout=HTTP_TIMEOUT)
                resp.raise_for_status()
            except Exception as exc:   # noqa: BLE001
                raise UsageError(f"--input {spec}: cannot read: {exc}") from None
        return _from_lines(spec, resp.text, urls[0].rsplit("/", 1)[0], stem(urls[0]), cfg)
    raise UsageError(f"--input {spec}: unknown input kind (expected .tar shards, .parquet files "
                     "or images by their extension)")


def _check_reachable(spec: str, url: str) -> None:
    with http_session() as session:
        try:
            resp = session.head(url, timeout=HTTP_TIMEOUT, allow_redirects=True)
            if resp.status_code in (405, 501):   # no HEAD: ask for the body, read none of it
                with session.get(url, timeout=HTTP_TIMEOUT, stream=True) as got:
                    resp = got
        except Exception as exc:   # noqa: BLE001
            raise UsageError(f"--input {spec}: cannot reach {url}: {type(exc).__name__}: "
                             f"{exc}") from None
    if resp.status_code >= 400:
        raise UsageError(f"--input {spec}: {url} answers HTTP {resp.status_code} {resp.reason}")


_PIPE_SHARD = re.compile(r"([^\s'\"/]+?)(?:\.tar\.gz|\.tgz|\.tar)\b")


def _pipe_name(command: str) -> str:
    found = _PIPE_SHARD.findall(command)
    return found[-1] if found else "pipe"
