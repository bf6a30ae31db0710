"""The unit of work and the sample records that flow between pipeline stages.

One input shard = one :class:`Unit` = one output shard. Folders, path lists and parquet
inputs are cut into units of ``--shard-size`` samples. A unit is pure data and JSON-able,
so the plan can be written once to the output folder and read back by every rank.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

UnitKind = Literal["tar", "files", "parquet"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def _backslash(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def escape_undecodable(text: str) -> str:
    """``text`` as valid UTF-8 for the output: the bytes of a name that are not UTF-8 (which
    Python keeps as lone surrogates, ``os.fsdecode``'s ``surrogateescape``) become ``\\xNN``.

    ``'caf\\udce9.jpg'`` (the file name bytes ``b'caf\\xe9.jpg'``) -> ``'caf\\xe9.jpg'``: a
    backslash, ``x`` and two lowercase hex digits, the same as
    ``name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")``. Any other
    lone surrogate (never made from bytes) becomes ``\\uNNNN``. Text that is valid UTF-8 is
    returned as it is. :func:`unescape_undecodable` reverses it.
    """
    if text.isascii():
        return text
    return _SURROGATE.sub(_backslash, text)


_ESCAPED = re.compile(r"\\x([89a-f][0-9a-f])")


def unescape_undecodable(text: str) -> str:
    """The name :func:`escape_undecodable` was made from (``'caf\\xe9.jpg'`` ->
    ``'caf\\udce9.jpg'``, a str that ``open``/``os.fsencode`` turn into the real bytes).

    Only ``\\x80`` .. ``\\xff`` are undone (the escape never makes others), so it is exact
    unless the original name itself held such a backslash sequence.
    """
    if "\\x" not in text:
        return text
    return _ESCAPED.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)


def json_text_utf8(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with every lone surrogate
    written as its ``\\uXXXX`` JSON escape, so the text encodes to UTF-8 and ``json.loads``
    gives back the very same strings (paths with undecodable bytes round-trip exactly).
    Lone surrogates can only stand inside JSON strings, where the escape is valid."""
    if text.isascii():
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@dataclass(frozen=True)
class Unit:
    index: int                      # position in the plan (0-based)
    kind: UnitKind
    source: str                     # tar: shard path/URL/pipe:; files: the key root (ends in "/");
                                    # parquet: the parquet file path/URL
    name: str                       # shard name, the key prefix (e.g. "shard-000003" or "part-000003")
    items: tuple[str, ...] = ()     # files: the image paths/URLs of this unit, in order
    row_range: tuple[int, int] | None = None  # parquet: rows [start, end) of `source`
    scanned: bool = False           # files: found by a folder scan (they existed at planning)

    @property
    def id(self) -> str:
        """Zero-padded id used for every file of this unit (sorts in plan order)."""
        return f"{self.index:06d}"

    @property
    def splittable(self) -> bool:
        """Whether samples can be read in parallel parts (random access)."""
        return self.kind != "tar"

    @property
    def expected_size(self) -> int | None:
        if self.kind == "files":
            return len(self.items)
        if self.kind == "parquet" and self.row_range is not None:
            return self.row_range[1] - self.row_range[0]
        return None   # tar: unknown until read

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["items"] = list(self.items)
        d["row_range"] = list(self.row_range) if self.row_range else None
        if not self.scanned:      # plans written before the field read the same
            del d["scanned"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Unit":
        rr = d.get("row_range")
        return cls(index=int(d["index"]), kind=d["kind"], source=d["source"], name=d["name"],
                   items=tuple(d.get("items") or ()), row_range=tuple(rr) if rr else None,
                   scanned=bool(d.get("scanned", False)))


@dataclass
class RawSample:
    """Bytes of one sample as read from its source, before decoding."""

    index: int                      # position inside the unit (defines output row order)
    key: str                        # globally unique key (shard + sample key, or relative path)
    source: str                     # file path/URL, or the shard it came from
    data: bytes | None              # None when reading failed (then `error` says why)
    error: str | None = None
    error_type: str | None = None
    meta: dict[str, Any] | None = None   # sidecar json fields (--keep-json)


@dataclass(frozen=True)
class Failure:
    """One sample that produced no row: recorded in the unit's failure ledger."""

    key: str
    source: str
    stage: str          # "read" | "decode" | "model"
    error_type: str
    message: str
    index: int = -1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DecodedBatchMeta:
    """Row bookkeeping that travels with a batch of decoded images."""

    unit_index: int
    indices: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    metas: list[dict[str, Any] | None] = field(default_factory=list)
