"""The small JSON records of the store: file info, done-record, run config, claim info."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..units import json_text_utf8


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def dumps(obj: Any) -> bytes:
    """Stable, human-readable JSON bytes for a record file (a path whose bytes are not UTF-8,
    e.g. a unit's source, is kept exactly, as ``\\udcXX`` JSON escapes)."""
    return (json_text_utf8(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False))
            + "\n").encode()


@dataclass(frozen=True)
class FileInfo:
    """One committed file: path relative to the output folder, size, sha256.

    ``staged`` is where the file waits (attempt-unique name under the manifest's staging
    folder) until its unit is committed; it is never written into a done-record.
    """

    path: str
    bytes: int
    sha256: str
    staged: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FileInfo":
        return cls(path=d["path"], bytes=int(d["bytes"]), sha256=d["sha256"], staged=d.get("staged"))


@dataclass(frozen=True)
class DoneRecord:
    """Written last, once per unit: the only authority that the unit is finished."""

    unit_id: str
    unit_name: str
    source: str
    rows: int
    failed: int
    files: list[FileInfo]
    ledger: FileInfo | None
    rank: str
    seconds: float
    finished_at: str = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = [f.to_dict() for f in self.files]
        d["ledger"] = self.ledger.to_dict() if self.ledger else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DoneRecord":
        return cls(unit_id=d["unit_id"], unit_name=d["unit_name"], source=d["source"],
                   rows=int(d["rows"]), failed=int(d["failed"]),
                   files=[FileInfo.from_dict(f) for f in d.get("files", [])],
                   ledger=FileInfo.from_dict(d["ledger"]) if d.get("ledger") else None,
                   rank=str(d.get("rank", "")), seconds=float(d.get("seconds", 0.0)),
                   finished_at=d.get("finished_at", ""))

    def all_files(self) -> list[FileInfo]:
        return self.files + ([self.ledger] if self.ledger else [])


@dataclass(frozen=True)
class RunConfig:
    """The run config file: the fingerprinted fields of the first run of a folder."""

    fingerprint: str
    fields: dict[str, Any]
    created: str
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return cls(fingerprint=d["fingerprint"], fields=d["fields"], created=d.get("created", ""),
                   run_id=d.get("run_id", ""))


@dataclass(frozen=True)
class ClaimInfo:
    """A live or stale claim on an unfinished unit (the newest claim generation)."""

    unit_id: str
    owner: str
    age_seconds: float          # since the last heartbeat (file mtime)
    stale: bool                 # age > the owner's lease, or owner gone: may be taken over
    generation: int = 0
    lease_seconds: float = 0.0
    owner_gone: bool = False    # its process has exited (known on the same machine only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
