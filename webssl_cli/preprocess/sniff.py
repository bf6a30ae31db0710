"""Cheap looks at encoded image bytes: which format, and (for JPEG) the declared size and
coding process (baseline, progressive, ...).

Used before decoding so that a decompression bomb is refused from its header alone,
without allocating its pixels.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
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


# A marker inside entropy-coded data: 0xFF followed by anything but 0x00 (a stuffed 0xFF data
# byte) or 0xD0-0xD7 (restart markers, legal inside a scan). Fill bytes (0xFF 0xFF) count.
_SCAN_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def jpeg_scan_start(data: bytes) -> int | None:
    """Offset of the first scan's entropy-coded data (just past the first SOS segment, by its
    length field), or None if the marker segments end, or break, before an SOS."""
    n = len(data)
    i = 2
    while i < n:
        if data[i] != 0xFF:
            return None
        while i < n and data[i] == 0xFF:      # fill bytes
            i += 1
        if i >= n:
            return None
        marker = data[i]
        if marker in _STANDALONE_MARKERS:
            i += 1
            continue
        if marker == 0xD9 or i + 2 >= n:
            return None
        seg_len = (data[i + 1] << 8) | data[i + 2]
        if seg_len < 2:
            return None
        if marker == 0xDA:
            return i + 1 + seg_len if i + 1 + seg_len <= n else None
        i += 1 + seg_len
    return None


def jpeg_single_clean_scan(data: bytes) -> bool:
    """Whether a JPEG's entropy-coded data is one clean scan ending the file: the first marker
    after the first SOS segment (stuffed 0xFF 0x00 and restart markers aside) is the EOI, at
    the end of the data (trailing zero bytes allowed). False for a stray marker in the scan
    data, a second scan (multi-scan baseline files: DHT/SOS between scans), fill bytes, a
    missing EOI, or no SOS at all. One C-speed regex search over the scan data."""
    start = jpeg_scan_start(data)
    if start is None:
        return False
    m = _SCAN_MARKER.search(data, start)
    if m is None or data[m.start() + 1] != 0xD9:
        return False
    end = m.end()
    return end == len(data) or end == len(data.rstrip(b"\x00"))


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
    i = 2
    app1 = _App1()
    while i < n:
        if data[i] != 0xFF:
            return None
        while i < n and data[i] == 0xFF:      # fill bytes
            i += 1
        if i >= n:
            return None
        marker = data[i]
        if marker in _STANDALONE_MARKERS:
            i += 1
            continue
        if marker == 0xDA or i + 2 >= n:
            return None
        seg_len = (data[i + 1] << 8) | data[i + 2]
        if marker in _SOF_MARKERS:
            if i + 7 >= n:
                return None
            height = (data[i + 4] << 8) | data[i + 5]
            width = (data[i + 6] << 8) | data[i + 7]
            return JpegFrame(width, height, marker, app1.orientation_elsewhere())
        if marker == 0xE1:
            app1.add(data, i + 3, i + 1 + seg_len)
        i += 1 + seg_len
    return None


_EXIF = b"Exif\x00\x00"
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"


class _App1:
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
