"""Which JPEGs may go to nvJPEG as they are (``--decode gpu``): single-scan baseline files whose
headers are self-consistent. Everything else decodes on the CPU, which judges it.

nvJPEG decoded a corrupt JPEG (a stray marker in its scan data) into garbage pixels without
any error on an H100 and an H200 (2026-11-27), where libjpeg on the CPU reports it
(``CorruptImage``). Header corruptions nvJPEG was not tried on are kept from it too: a valid
but odd file sent to the CPU is only slower, a corrupt one sent to the GPU may become
features silently. One walk over the marker segments (``sniff.jpeg_segments``), a few checks
per segment, then one C-speed regex search over the scan data: about 70 us for a 200 KB file,
most of it the search.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from .sniff import BASELINE_SOF, SOF_MARKERS, App1Notes, JpegFrame, jpeg_segments

# A marker inside entropy-coded data: 0xFF followed by anything but 0x00 (a stuffed 0xFF data
# byte) or 0xD0-0xD7 (restart markers, legal inside a scan). Fill bytes (0xFF 0xFF) count.
_SCAN_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
# The same where the headers define no restart interval: a restart marker counts too.
_SCAN_MARKER_NO_RST = re.compile(rb"\xff[^\x00]")

MAX_SEGMENTS = 256           # before the SOS; libjpeg writes under 20, cameras under 40
_APP_OR_COM = frozenset({*range(0xE0, 0xF0), 0xFE})
_KRAFT = tuple(1 << (16 - k) for k in range(1, 17))   # code space of a code of length k
_HUFFMAN_CODES: dict[bytes, int] = {}     # the 16 counts of a table -> _huffman_codes()


def jpeg_scan_start(data: bytes) -> int | None:
    """Offset of the first scan's entropy-coded data (just past the first SOS segment, by its
    length field), or None if the marker segments end, or break, before an SOS."""
    for marker, _, end in jpeg_segments(data):
        if marker == 0xDA:
            return end if end <= len(data) else None
    return None


def _scan_end(data: bytes, start: int, restarts: bool = True) -> int | None:
    """Where the image ends (past its EOI) when the first marker in ``data[start:]`` (stuffed
    0xFF 0x00 aside, and restart markers where ``restarts``) is the EOI; else None. What
    follows the EOI is not the image's: decoders stop there (phones append gain maps, motion
    video or vendor trailers; Multi-Picture files a second JPEG)."""
    m = (_SCAN_MARKER if restarts else _SCAN_MARKER_NO_RST).search(data, start)
    if m is None or data[m.start() + 1] != 0xD9:
        return None
    return m.end()


def jpeg_single_clean_scan(data: bytes) -> bool:
    """Whether a JPEG's entropy-coded data is one clean scan ending at an EOI: the first marker
    after the first SOS segment (stuffed 0xFF 0x00 and restart markers aside) is the EOI.
    False for a stray marker in the scan data, a second scan (multi-scan baseline files:
    DHT/SOS between scans), fill bytes, a missing EOI, or no SOS at all. Data after the EOI
    is allowed (:func:`_scan_end`). (:func:`jpeg_gpu_check` does this and checks the
    headers.)"""
    start = jpeg_scan_start(data)
    return start is not None and _scan_end(data, start) is not None


def _huffman_codes(counts: bytes) -> int:
    """The number of codes in a Huffman table with these 16 counts (codes per length), -1
    where they overfill the code space (Kraft inequality; the all-ones code, which libjpeg
    refuses, counted as used), -2 where they add up to more than 256. Remembered per
    ``counts``: the standard tables recur in every file of most sources."""
    total = _HUFFMAN_CODES.get(counts)
    if total is None:
        total = sum(counts)
        if sum(map(int.__mul__, counts, _KRAFT)) >= 1 << 16:
            total = -1
        elif total > 256:
            total = -2
        if len(_HUFFMAN_CODES) >= 4096:
            _HUFFMAN_CODES.clear()
        _HUFFMAN_CODES[counts] = total
    return total


@dataclass
class _Tables:
    """What the segments before the scan defined."""
    frame: JpegFrame | None = None
    comps: bytes = b""                    # the SOF's component specs, 3 bytes each
    quant: set[int] = field(default_factory=set)
    dc: dict[int, int] = field(default_factory=dict)    # table id -> number of codes
    ac: dict[int, int] = field(default_factory=dict)
    restarts: bool = False                # a DRI set a restart interval
    adobe_rgb: bool = False               # an Adobe APP14 says the components are not YCbCr
    end: int = 0                          # past the EOI, once the scan checked out


def _dqt(data: bytes, at: int, end: int, t: _Tables) -> str | None:
    """Tables of 1 + 64 (8-bit) or 1 + 128 (16-bit) bytes filling the segment, ids 0-3."""
    p = at + 3
    if p >= end:
        return "empty DQT"
    while p < end:
        pq, tq = data[p] >> 4, data[p] & 15
        if pq > 1 or tq > 3:
            return f"DQT table precision {pq} / id {tq}"
        p += 65 + 64 * pq
        if p > end:
            return "DQT length does not match its tables"
        t.quant.add(tq)
    return None


def _dht(data: bytes, at: int, end: int, t: _Tables) -> str | None:
    """Per table: class 0/1, id 0-3, 16 counts summing to at most 256 and satisfying the
    Kraft inequality with the all-ones code unused (as libjpeg requires), DC symbols at most
    15, the values filling the segment exactly."""
    p = at + 3
    if p >= end:
        return "empty DHT"
    while p < end:
        if p + 17 > end:
            return "DHT cut inside a table's counts"
        tc, th = data[p] >> 4, data[p] & 15
        if tc > 1 or th > 3:
            return f"DHT table class {tc} / id {th}"
        total = _huffman_codes(data[p + 1:p + 17])
        if total < 0:
            return ("DHT code lengths overfill the code space" if total == -1
                    else "DHT table with more than 256 codes")
        q = p + 17 + total
        if q > end:
            return "DHT length does not match its tables"
        if tc == 0 and total and max(data[p + 17:q]) > 15:
            return "DHT DC table with a symbol above 15"
        (t.ac if tc else t.dc)[th] = total
        p = q
    return None


def _sof(data: bytes, marker: int, at: int, end: int, t: _Tables, app1: App1Notes) -> str | None:
    """One frame header, baseline: 8-bit samples, width and height above 0, 1-4 components with
    distinct ids, sampling factors 1-4 (at most 10 blocks per MCU when interleaved), length
    8 + 3 * Nf, quantization table ids 0-3. Sets ``t.frame`` (as ``sniff.jpeg_frame`` gives
    it) when the header is long enough to read."""
    if t.frame is not None:
        return "a second frame header"
    if at + 8 >= end:
        return "SOF too short"
    t.frame = JpegFrame((data[at + 6] << 8) | data[at + 7], (data[at + 4] << 8) | data[at + 5],
                        marker, app1.orientation_elsewhere())
    if marker != BASELINE_SOF:
        return f"not baseline (SOF 0x{marker:02x})"
    nf = data[at + 8]
    if not 1 <= nf <= 4 or end - at - 1 != 8 + 3 * nf:
        return f"SOF length {end - at - 1} for {nf} components"
    if data[at + 3] != 8:
        return f"SOF sample precision {data[at + 3]}"
    if t.frame.width == 0 or t.frame.height == 0:
        return "SOF size 0 (a DNL height)"
    t.comps = data[at + 9:end]
    if len(set(t.comps[0::3])) != nf:
        return "SOF component ids repeat"
    blocks = 0
    for hv, tq in zip(t.comps[1::3], t.comps[2::3]):
        h, v = hv >> 4, hv & 15
        if not (1 <= h <= 4 and 1 <= v <= 4) or tq > 3:
            return f"SOF sampling {h}x{v} / quantization table {tq}"
        blocks += h * v
    if nf > 1 and blocks > 10:
        return f"{blocks} blocks per MCU"
    return None


def _sos(data: bytes, at: int, end: int, t: _Tables) -> str | None:
    """The scan header: length 6 + 2 * Ns, its components the frame's in frame order (a
    single scan carries them all), each DC and AC Huffman table defined, non-empty and with
    id 0/1 (baseline), the frame's quantization tables defined, Ss = 0, Se = 63, Ah = Al = 0;
    then the scan data: one clean scan ending at the EOI (restart markers only where a DRI
    set an interval)."""
    if t.frame is None:
        return "SOS before any SOF"
    if end - at - 1 < 3:
        return "SOS too short"
    ns = data[at + 3]
    if not 1 <= ns <= 4 or end - at - 1 != 6 + 2 * ns:
        return f"SOS length {end - at - 1} for {ns} components"
    spec = data[at + 4:at + 4 + 2 * ns]
    if spec[0::2] != t.comps[0::3]:
        return "SOS components are not the frame's, in order"
    for sel in spec[1::2]:
        td, ta = sel >> 4, sel & 15
        if td > 1 or ta > 1 or not t.dc.get(td) or not t.ac.get(ta):
            return f"SOS Huffman tables DC {td} / AC {ta} undefined"
    missing = set(t.comps[2::3]) - t.quant
    if missing:
        return f"quantization table {min(missing)} undefined"
    if data[end - 3:end] != b"\x00\x3f\x00":
        return "SOS spectral selection / approximation not 0, 63, 0"
    if len(t.comps) == 9 and (t.adobe_rgb or t.comps[0::3] == b"RGB"):
        return "RGB-coded, not YCbCr (Adobe transform 0 or component ids R, G, B)"
    scan_end = _scan_end(data, end, t.restarts)
    if scan_end is None:
        return ("the scan data is not one clean scan ending at an EOI (a stray marker, a "
                "second scan, a missing EOI)")
    t.end = scan_end
    return None


class GpuJpeg(NamedTuple):
    frame: JpegFrame | None      # the frame header as ``sniff.jpeg_frame`` gives it
    problem: str | None          # why it may not go to nvJPEG; None: it may
    length: int = 0              # bytes of the image, up to its EOI (what nvJPEG is given)


def jpeg_gpu_unsafe(data: bytes) -> str | None:
    """Why a JPEG may not go to nvJPEG as it is (see :func:`jpeg_gpu_check`), or None."""
    return jpeg_gpu_check(data).problem


def jpeg_gpu_check(data: bytes) -> GpuJpeg:
    """Whether ``data`` is a single-scan baseline JPEG whose headers are self-consistent, in
    YCbCr or grayscale, and where the image ends. Before the SOS only SOF0, DQT, DHT, DRI,
    APPn and COM segments, one SOF, no fill bytes, at most ``MAX_SEGMENTS`` segments, none
    running past the data; each segment as its checker (``_dqt``, ``_dht``, ``_sof``,
    ``_sos``) says. An Adobe APP14 with transform 0 (or components named R, G, B) marks an
    RGB-coded file, which libjpeg does not convert as YCbCr; whether nvJPEG honours it was
    never tried, so it stays off the GPU."""
    n = len(data)
    if not data.startswith(b"\xff\xd8"):
        return GpuJpeg(None, "not a JPEG (no SOI)")
    t = _Tables()
    app1 = App1Notes()
    expect = 2                            # where the next marker's 0xFF belongs
    for count, (marker, at, end) in enumerate(jpeg_segments(data)):
        if at != expect + 1:
            return GpuJpeg(t.frame, f"fill bytes before marker 0x{marker:02x}")
        if count >= MAX_SEGMENTS:
            return GpuJpeg(t.frame, f"more than {MAX_SEGMENTS} segments before the scan")
        if end > n:
            return GpuJpeg(t.frame, f"segment 0x{marker:02x} runs past the end of the data")
        expect = end
        if marker == 0xDB:
            problem = _dqt(data, at, end, t)
        elif marker == 0xC4:
            problem = _dht(data, at, end, t)
        elif marker in SOF_MARKERS:
            problem = _sof(data, marker, at, end, t, app1)
        elif marker == 0xDA:
            problem = _sos(data, at, end, t)
            return GpuJpeg(t.frame, problem, t.end if problem is None else 0)
        elif marker == 0xDD:
            problem = "DRI length" if end - at - 1 != 4 else None
            t.restarts = problem is None and (data[at + 3] != 0 or data[at + 4] != 0)
        elif marker in _APP_OR_COM:
            problem = None
            if marker == 0xE1 and t.frame is None:
                app1.add(data, at + 3, end)
            elif marker == 0xEE and end - at - 3 >= 12 and data.startswith(b"Adobe", at + 3):
                t.adobe_rgb = data[at + 14] == 0          # the transform byte
        else:
            problem = f"marker 0x{marker:02x} before the scan"
        if problem is not None:
            return GpuJpeg(t.frame, problem)
    return GpuJpeg(t.frame, "the segments end or break before an SOS")
