"""Which weights made an output: the full sha256 recorded in its run config.

Two checkpoints of one architecture have the same size, and fine-tunes can share their first
megabytes, so nothing short of the whole content tells them apart. A single file's value is
its plain sha256 (checkable with ``sha256sum``); a folder's is the sha256 of its weight
files' ``name:sha256`` lines. Cached downloads carry a ``.sha256`` sidecar and a
``.verified`` stamp, used as they are while the stamp matches the file; any other file is
hashed once and the result memoized under ``memo_dir``, keyed by the file's path, size, mtime
and inode, so later runs and ranks do not read it again.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".json")


def weight_files(path: str | os.PathLike[str]) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    return sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)


def _verified_sidecar(f: Path) -> str | None:
    """The sidecar's sha256, only while the ``.verified`` stamp says the file was hashed to
    it and not touched since: a sidecar alone may be stale (a file swapped beside it)."""
    from ..errors import CheckpointError
    from ..weights.checksum import read_sidecar, stamp_matches
    try:
        value = read_sidecar(f)
    except CheckpointError:
        return None
    return value if value is not None and stamp_matches(f, value) else None


def _memo_path(f: Path, memo_dir: Path) -> Path:
    return memo_dir / (hashlib.sha256(str(f.resolve()).encode()).hexdigest()[:32] + ".json")


def _stamp(f: Path) -> dict[str, int | str]:
    st = f.stat()
    return {"path": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino}


def file_sha256(f: Path, memo_dir: Path | None = None) -> str:
    """The sha256 of ``f``: its verified sidecar's, its memo's (same path, size, mtime, inode), or
    computed (and memoized, best effort: a read-only cache only means hashing again)."""
    known = _verified_sidecar(f)
    if known:
        return known
    stamp = _stamp(f)
    memo = _memo_path(f, memo_dir) if memo_dir is not None else None
    if memo is not None:
        try:
            data = json.loads(memo.read_text())
            if {k: data.get(k) for k in stamp} == stamp and len(data.get("sha256", "")) == 64:
                return data["sha256"]
        except (OSError, ValueError, AttributeError):
            pass
    if stamp["size"] > 1 << 30:
        print(f"hashing {f} ({stamp['size'] / 2**30:.1f} GiB) once, to record which weights "
              "made this output", file=sys.stderr, flush=True)
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            h.update(chunk)
    value = h.hexdigest()
    if memo is not None:
        from ..atomic_io import atomic_write_bytes
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(memo, json.dumps({**stamp, "sha256": value}).encode())
        except OSError:
            pass
    return value


def weights_sha256(path: str | os.PathLike[str], memo_dir: Path | None = None) -> str:
    """The full content identity of a weights file (its sha256) or folder (see module doc)."""
    p = Path(path)
    files = weight_files(p)
    if p.is_file():
        return file_sha256(p, memo_dir)
    lines = "".join(f"{f.relative_to(p).as_posix()}:{file_sha256(f, memo_dir)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()
