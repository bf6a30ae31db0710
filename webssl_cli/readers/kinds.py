"""What planned inputs are made of: tar shards, image file sets and parquet files, and how a
name's extension tells them apart."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
              ".jfif", ".jpe")
# image types a folder scan finds but does not read (not decoded): named in a warning
UNREAD_IMAGE_EXTS = (".avif", ".heic", ".heif", ".jxl", ".jp2", ".j2k", ".jpx", ".ico", ".icns",
                     ".ppm", ".pgm", ".pbm", ".pnm", ".psd", ".tga", ".qoi", ".dds", ".svg",
                     ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf")
TAR_EXTS = (".tar", ".tar.gz", ".tgz")
PARQUET_EXTS = (".parquet", ".pq")
LIST_EXTS = (".txt", ".lst", ".list")     # text lists of paths/URLs (compared lowercased)


@dataclass
class TarShard:
    source: str
    name: str


@dataclass
class FileSet:
    root: str                     # folder the keys are relative to, ending in "/"
    base: str                     # unit name prefix
    items: list[str] = field(default_factory=list)
    spec: str = ""                # the --input that named them, for messages
    scanned: bool = False         # found by a local folder scan (not named by a list)


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


def is_list(name: str) -> bool:
    """A text list of paths/URLs, by its extension (a query string is ignored)."""
    return name.split("?", 1)[0].lower().endswith(LIST_EXTS)


def stem(name: str) -> str:
    base = name.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    for ext in TAR_EXTS + PARQUET_EXTS + IMAGE_EXTS + LIST_EXTS:
        if base.lower().endswith(ext):
            return base[: -len(ext)] or base
    return base


_PIPE_SHARD = re.compile(r"([^\s'\"/]+?)(?:\.tar\.gz|\.tgz|\.tar)\b")


def pipe_name(command: str) -> str:
    """Unit name of a ``pipe:`` command: the stem of the last shard file it names, else "pipe"."""
    found = _PIPE_SHARD.findall(command)
    return found[-1] if found else "pipe"
