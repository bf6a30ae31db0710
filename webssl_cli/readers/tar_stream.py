"""A strict streaming reader of tar archives (the WebDataset container).

Why not :mod:`tarfile`: in stream mode it ends quietly when an archive is cut at a header
boundary, and a truncated shard must be an error here. This reader requires the end-of-archive
zero block; a stream that ends before it, a short member, or a header with a bad checksum raises
:class:`TarFormatError`. Understood: ustar/GNU/PAX regular files, PAX ``path``/``size`` records,
GNU long names, base-256 sizes. Directories, links and other entries are skipped.

Members whose data the caller does not want are read and thrown away in chunks, so a large
non-image member does not sit in memory.
"""
from __future__ import annotations

from typing import BinaryIO, Callable, Iterator

from .errors import TarFormatError

BLOCK = 512
_CHUNK = 1 << 20
_REGULAR = (b"0", b"\x00", b"7")


def iter_tar_members(stream: BinaryIO,
                     want: Callable[[str], bool]) -> Iterator[tuple[str, bytes | None]]:
    """Yield ``(member name, data)`` for each regular file, data None when ``want(name)`` is False."""
    long_name: str | None = None
    pax: dict[str, str] = {}
    offset = 0
    while True:
        header = _read_exact(stream, BLOCK)
        if len(header) < BLOCK:
            raise TarFormatError(f"archive ends at byte {offset + len(header)} without the "
                                 "end-of-archive marker (truncated?)")
        if header == b"\x00" * BLOCK:
            return
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
        if typeflag in (b"x", b"L", b"g"):
            data = _read_member(stream, size, padded, offset, name)
            if typeflag == b"x":
                pax = _parse_pax(data)
            elif typeflag == b"L":
                long_name = data.split(b"\x00", 1)[0].decode("utf-8", "replace")
            offset += padded
            continue
        regular = typeflag in _REGULAR
        keep = regular and want(name)
        data = _read_member(stream, size, padded, offset, name) if keep else None
        if not keep:
            _skip(stream, padded, offset, name)
        offset += padded
        long_name, pax = None, {}
        if regular:
            yield name, data


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
    return name.decode("utf-8", "replace")


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
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return records
