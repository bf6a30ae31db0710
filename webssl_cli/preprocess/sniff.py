"""Cheap looks at encoded image bytes: which format, and (for JPEG) the declared size and
coding process (baseline, progressive, ...).

Used before decoding so that a decompression bomb is refused from its header alone,
without allocating its pixels.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                          0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE_MARKERS = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


def sniff_format(data: bytes) -> str | None:
    """Return 'jpeg', 'png', 'gif', 'webp', 'bmp' or 'tiff' from the magic bytes, else None."""
    head = data[:12]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


BASELINE_SOF = 0xC0      # baseline DCT, Huffman, 8-bit: what nvJPEG's hardware decoder takes


@dataclass(frozen=True)
class JpegFrame:
    width: int
    height: int
    sof: int            # the frame marker: 0xC0 baseline, 0xC1 extended, 0xC2 progressive, ...
    orientation_elsewhere: bool = False   # see :func:`jpeg_frame`


_FILL = re.compile(rb"\xff+")


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """The one walk over a JPEG's marker segments, from just past SOI: yields
    ``(marker, at, end)`` per marker, ``at`` the index of the marker code byte (fill bytes
    before it skipped) and ``end`` the index past its segment (``at + 1`` for a standalone
    marker; may lie past the data for a truncated segment). Stops after the SOS or an EOI,
    and where the segments break (no 0xFF where a marker belongs, a length field cut off or
    below 2): callers tell a break by not having seen the marker they wanted."""
    n = len(data)
    i = 2
    while i < n:
        if data[i] != 0xFF:
            return
        i += 1
        if i < n and data[i] == 0xFF:          # fill bytes: one C-speed match, however many
            i = _FILL.match(data, i).end()
        if i >= n:
            return
        marker = data[i]
        if marker in _STANDALONE_MARKERS:
            yield marker, i, i + 1
            i += 1
            continue
        if marker == 0xD9:
            yield marker, i, i + 1
            return
        if i + 2 >= n:
            return
        seg_len = (data[i + 1] << 8) | data[i + 2]
        if seg_len < 2:
            return
        end = i + 1 + seg_len
        yield marker, i, end
        if marker == 0xDA:
            return
        i = end


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF segment of a JPEG, or None if not found."""
    frame = jpeg_frame(data)
    return None if frame is None else (frame.width, frame.height)


def jpeg_frame(data: bytes) -> JpegFrame | None:
    """The first SOF segment of a JPEG (size and coding process), or None if not found.

    Walks the marker segments from SOI; stops at SOS (no frame header before the scan
    means a broken file, which the decoder then reports).

    ``orientation_elsewhere``: an orientation may be recorded where torchvision's
    ``decode_jpeg`` does not look (it reads the first APP1 segment only, when that is EXIF):
    an EXIF block behind another APP1 (XMP first), or an XMP ``tiff:Orientation`` without an
    EXIF orientation before it. PIL reads both; such files are decoded with PIL.
    """
    n = len(data)
    app1 = App1Notes()
    for marker, at, end in jpeg_segments(data):
        if marker in SOF_MARKERS:
            if at + 7 >= n:
                return None
            return JpegFrame((data[at + 6] << 8) | data[at + 7],
                             (data[at + 4] << 8) | data[at + 5], marker,
                             app1.orientation_elsewhere())
        if marker == 0xE1:
            app1.add(data, at + 3, end)
        elif marker == 0xDA or marker == 0xD9:
            return None
    return None


_EXIF = b"Exif\x00\x00"
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"


class App1Notes:
    """What the APP1 segments before the frame say about the orientation."""

    def __init__(self) -> None:
        self.count = 0
        self.first_exif: tuple[bytes, int, int] | None = None   # (data, start, end) of it
        self.later_exif = False
        self.xmp_orientation = False

    def add(self, data: bytes, start: int, end: int) -> None:
        """The APP1 segment body ``data[start:end]`` (looked at in place, never copied:
        this runs for every JPEG decoded)."""
        self.count += 1
        if data.startswith(_EXIF, start, end):
            if self.count == 1:
                self.first_exif = (data, start, end)
            else:
                self.later_exif = True
        elif data.startswith(_XMP, start, end) and data.find(b"tiff:Orientation", start,
                                                               end) >= 0:
            self.xmp_orientation = True

    def orientation_elsewhere(self) -> bool:
        if self.first_exif is None:
            return self.later_exif or self.xmp_orientation
        if not self.xmp_orientation:
            return False
        data, start, end = self.first_exif
        return not _has_orientation_tag(data[start + len(_EXIF):end])


def _has_orientation_tag(tiff: bytes) -> bool:
    """Whether IFD0 of an EXIF (TIFF) block has tag 0x0112; unreadable counts as having it
    (torchvision and PIL then both read the same block)."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return True
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return True
    count = int.from_bytes(tiff[ifd:ifd + 2], order)
    for k in range(count):
        at = ifd + 2 + 12 * k
        if at + 2 > len(tiff):
            return True
        if int.from_bytes(tiff[at:at + 2], order) == 0x0112:
            return True
    return False
