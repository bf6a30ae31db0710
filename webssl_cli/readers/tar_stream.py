"""A strict streaming reader of tar archives (the WebDataset container).

Why not :mod:`tarfile`: in stream mode it ends quietly when an archive is cut at a header
boundary, and a truncated shard must be an error here. This reader requires the end-of-archive
zero block; a stream that ends before it, a short member, or a header with a bad checksum raises
:class:`TarFormatError`. Archives concatenated in one stream (``cat a.tar b.tar``) are all
read, as ``tar --ignore-zeros`` reads them; data after the end that is neither zero padding
nor a tar header is an error. Understood: ustar/GNU/PAX regular files, PAX ``path``/``size``
records, GNU long names and link names, base-256 sizes. Directories are skipped; a device or
FIFO entry with a wanted name is yielded with a :class:`SpecialMember` saying so.

Members whose data the caller does not want are read and thrown away in chunks, so a large
non-image member does not sit in memory.

Links (hard ``1``, symbolic ``2``) are yielded under their own name. A wanted link resolves to
the data of an earlier member of the same archive: the data of members that ``remember(name)``
accepts is kept for that, the most recent :data:`LINK_MEMORY` bytes of it. A link that cannot
be resolved (target outside the archive, later in it, not kept) is yielded with an
:class:`UnresolvedLink` saying why.
"""
from __future__ import annotations

import logging
import posixpath
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

from .errors import TarFormatError

log = logging.getLogger("webssl.readers")

BLOCK = 512
_CHUNK = 1 << 20
_REGULAR = (b"0", b"\x00", b"7")
_LINKS = {b"1": "hard link", b"2": "symlink"}
LINK_MEMORY = 32 << 20     # bytes of earlier members kept to resolve links to them
_ZERO = b"\x00" * BLOCK


@dataclass(frozen=True)
class UnresolvedLink:
    """A wanted link member whose target's data is not available; ``reason`` says why."""

    reason: str


@dataclass(frozen=True)
class SpecialMember:
    """A wanted member that is a device or FIFO entry, which holds no data."""

    reason: str


Data = bytes | UnresolvedLink | SpecialMember | None
_SPECIAL = {b"3": "character device", b"4": "block device", b"6": "FIFO"}


def iter_tar_members(stream: BinaryIO, want: Callable[[str], bool],
                     remember: Callable[[str], bool] | None = None
                     ) -> Iterator[tuple[str, Data]]:
    """Yield ``(member name, data)`` for each regular file and link, data None when
    ``want(name)`` is False (see the module docstring for links; ``remember`` defaults to
    ``want``)."""
    links = _LinkResolver(remember or want)
    long_name: str | None = None
    long_link: str | None = None
    pax: dict[str, str] = {}
    offset = 0
    while True:
        header = _read_exact(stream, BLOCK)
        if offset == 0 and not header:
            raise TarFormatError("the shard is empty (0 bytes), not a tar archive: replace it "
                                 "with the complete shard or remove it from the input")
        if len(header) < BLOCK:
            raise TarFormatError(f"archive ends at byte {offset + len(header)} without the "
                                 "end-of-archive marker (truncated?)")
        if header == _ZERO:
            following = _next_archive(stream, offset + BLOCK)
            if following is None:
                return
            header, offset = following
        _verify_checksum(header, offset)
        typeflag = header[156:157]
        size = _parse_number(header[124:136], offset)
        if "size" in pax:
            size = int(pax["size"]) if pax["size"].isdigit() else -1
        if size < 0:
            raise TarFormatError(f"bad member size in the tar header at byte {offset}")
        name = long_name or pax.get("path") or _header_name(header)
        offset += BLOCK
        padded = -(-size // BLOCK) * BLOCK
        if typeflag in (b"x", b"L", b"K", b"g"):
            extra = _read_member(stream, size, padded, offset, name)
            if typeflag == b"x":
                pax = _parse_pax(extra)
            elif typeflag == b"L":
                long_name = _header_text(extra)
            elif typeflag == b"K":
                long_link = _header_text(extra)
            offset += padded
            continue
        regular, wanted = typeflag in _REGULAR, want(name)
        keep = regular and (wanted or links.remember(name))
        data: Data = _read_member(stream, size, padded, offset, name) if keep else None
        if not keep:
            _skip(stream, padded, offset, name)
        offset += padded
        target = long_link or pax.get("linkpath") or _header_text(header[157:257])
        long_name, long_link, pax = None, None, {}
        if regular:
            links.add(name, data)
            yield name, (data if wanted else None)
        elif typeflag in _LINKS:
            data = links.resolve(name, target, _LINKS[typeflag]) if wanted else None
            links.add(name, data)
            yield name, data
        elif typeflag in _SPECIAL and wanted:
            yield name, SpecialMember(f"member {name!r} is a {_SPECIAL[typeflag]} entry, which "
                                      "holds no data; store the file itself in the shard")


def _next_archive(stream: BinaryIO, offset: int) -> tuple[bytes, int] | None:
    """After an end-of-archive zero block at ``offset - BLOCK``: the first header of an archive
    that follows this one and its offset (``cat a.tar b.tar``: read as ``tar --ignore-zeros``
    reads it, so b.tar is not dropped), or None when only zero padding is left. Other data
    there is an error: it may be a damaged next archive. A stream that cannot be read on past
    the archive (a gzip with bytes after its end, which gzip itself ignores; a connection lost
    after the archive) ends it with a warning. A stream with ``bound_reads(on)`` is told
    where archives end and start (a ``pipe:`` bounds its waits in between)."""
    _bound_reads(stream, True)
    try:
        while True:
            block = _read_exact(stream, BLOCK)
            if block.strip(b"\x00"):
                break
            if len(block) < BLOCK:
                return None
            offset += BLOCK
    except (OSError, EOFError, zlib.error) as exc:
        log.warning("after the archive's end (byte %d): %s: %s; the rest of the stream is not "
                    "read", offset, type(exc).__name__, exc)
        return None
    if len(block) == BLOCK:
        try:
            _verify_checksum(block, offset)
            _bound_reads(stream, False)
            return block, offset
        except TarFormatError:
            pass
    raise TarFormatError(f"data at byte {offset}, after the end-of-archive marker, is not a tar "
                         "header: the shard has something appended to it, or a second archive "
                         "appended to it is damaged. Rebuild the shard, or cut it to its archive")


def _bound_reads(stream: BinaryIO, on: bool) -> None:
    bound = getattr(stream, "bound_reads", None)
    if bound is not None:
        bound(on)


class _LinkResolver:
    """The data of earlier members, bounded by :data:`LINK_MEMORY`, to resolve links."""

    def __init__(self, remember: Callable[[str], bool]) -> None:
        self.remember = remember
        self.kept: OrderedDict[str, bytes] = OrderedDict()
        self.kept_bytes = 0
        self.seen: set[str] = set()

    def add(self, name: str, data: Data) -> None:
        path = _inside(name, "")
        if path is None:
            return
        self.seen.add(path)
        if not isinstance(data, bytes) or not self.remember(name):
            return
        self.kept[path] = data
        self.kept.move_to_end(path)
        self.kept_bytes += len(data)
        while self.kept_bytes > LINK_MEMORY and self.kept:
            self.kept_bytes -= len(self.kept.popitem(last=False)[1])

    def resolve(self, name: str, target: str, kind: str) -> Data:
        base = posixpath.dirname(name) if kind == "symlink" else ""
        path = _inside(target, base)
        what = f"member {name!r} is a {kind} to {target!r}"
        if path is None:
            return UnresolvedLink(f"{what}; links outside the shard are not followed (store "
                                  "the file itself in the shard)")
        if path in self.kept:
            return self.kept[path]
        if path in self.seen:
            return UnresolvedLink(f"{what}, an earlier member whose data was not kept (links "
                                  "resolve to image/json members within the last "
                                  f"{LINK_MEMORY >> 20} MiB of the shard); store the file "
                                  "itself in the shard")
        return UnresolvedLink(f"{what}, which is not an earlier member of the shard (links "
                              "resolve only to members stored before them in the same shard); "
                              "store the file itself in the shard")


def _inside(path: str, base: str) -> str | None:
    """``path`` (relative to ``base``) normalized inside the archive, None when it leaves it."""
    if not path or path.startswith("/"):
        return None
    joined = posixpath.normpath(posixpath.join(base, path))
    if joined == ".." or joined.startswith("../"):
        return None
    return joined


def _header_text(field: bytes) -> str:
    return _name_text(field.split(b"\x00", 1)[0])


def _name_text(raw: bytes) -> str:
    """A member or link name: UTF-8, its other bytes kept as lone surrogates (as ``tarfile``
    and ``os.fsdecode`` do), so distinct names stay distinct and links still resolve; the
    reader escapes them for the output (``escape_undecodable``)."""
    return raw.decode("utf-8", "surrogateescape")


def _read_member(stream: BinaryIO, size: int, padded: int, offset: int, name: str) -> bytes:
    data = _read_exact(stream, padded)
    if len(data) < padded:
        raise TarFormatError(f"member {name!r} at byte {offset} is cut short: "
                             f"{len(data)} of {padded} bytes (truncated?)")
    return data[:size]


def _skip(stream: BinaryIO, n: int, offset: int, name: str) -> None:
    left = n
    while left:
        got = len(stream.read(min(left, _CHUNK)))
        if got == 0:
            raise TarFormatError(f"member {name!r} at byte {offset} is cut short "
                                 f"({n - left} of {n} bytes, truncated?)")
        left -= got


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    parts, left = [], n
    while left:
        chunk = stream.read(min(left, _CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _verify_checksum(header: bytes, offset: int) -> None:
    stored = header[148:156].split(b"\x00", 1)[0].strip()
    try:
        expected = int(stored, 8)
    except ValueError:
        raise TarFormatError(f"no valid tar header at byte {offset} (not a tar file?)") from None
    actual = sum(header[:148]) + 8 * 32 + sum(header[156:])
    if actual != expected:
        raise TarFormatError(f"bad tar header checksum at byte {offset} (corrupt archive)")


def _parse_number(field: bytes, offset: int) -> int:
    if field[:1] in (b"\x80", b"\xff"):   # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return -value if field[:1] == b"\xff" else value
    text = field.split(b"\x00", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError(f"bad size field in the tar header at byte {offset}") from None


def _header_name(header: bytes) -> str:
    name = header[0:100].split(b"\x00", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\x00", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return _name_text(name)


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        record = data[space + 1:pos + length].rstrip(b"\n")
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8", "replace")] = _name_text(value)   # hdrcharset=BINARY
        pos += length
    return records
