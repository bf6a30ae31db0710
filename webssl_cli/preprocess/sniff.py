"""Cheap looks at encoded image bytes: which format, and (for JPEG) the declared size and
coding process (baseline, progressive, ...).

Used before decoding so that a decompression bomb is refused from its header alone,
without allocating its pixels.
"""
from __future__ import annotations

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


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF segment of a JPEG, or None if not found."""
    frame = jpeg_frame(data)
    return None if frame is None else (frame.width, frame.height)


def jpeg_frame(data: bytes) -> JpegFrame | None:
    """The first SOF segment of a JPEG (size and coding process), or None if not found.

    Walks the marker segments from SOI; stops at SOS (no frame header before the scan
    means a broken file, which the decoder then reports).
    """
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
        if marker == 0xDA or i + 2 >= n:
            return None
        seg_len = (data[i + 1] << 8) | data[i + 2]
        if marker in _SOF_MARKERS:
            if i + 7 >= n:
                return None
            height = (data[i + 4] << 8) | data[i + 5]
            width = (data[i + 6] << 8) | data[i + 7]
            return JpegFrame(width, height, marker)
        i += 1 + seg_len
    return None
