"""The unit of work and the sample records that flow between pipeline stages.

One input shard = one :class:`Unit` = one output shard. Folders, path lists and parquet
inputs are cut into units of ``--shard-size`` samples. A unit is pure data and JSON-able,
so the plan can be written once to the output folder and read back by every rank.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

UnitKind = Literal["tar", "files", "parquet"]


@dataclass(frozen=True)
class Unit:
    index: int                      # position in the plan (0-based)
    kind: UnitKind
    source: str                     # tar: shard path/URL/pipe:; files: the key root (ends in "/");
                                    # parquet: the parquet file path/URL
    name: str                       # shard name, the key prefix (e.g. "shard-000003" or "part-000003")
    items: tuple[str, ...] = ()     # files: the image paths/URLs of this unit, in order
    row_range: tuple[int, int] | None = None  # parquet: rows [start, end) of `source`

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
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Unit":
        rr = d.get("row_range")
        return cls(index=int(d["index"]), kind=d["kind"], source=d["source"], name=d["name"],
                   items=tuple(d.get("items") or ()), row_range=tuple(rr) if rr else None)


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
