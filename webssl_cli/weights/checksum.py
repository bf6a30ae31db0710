"""sha256 sidecars of downloaded checkpoints and the cheap re-check on later loads.

Beside every downloaded ``<file>`` the cache holds:

- ``<file>.sha256``: ``<hex>  <file name>`` (the ``sha256sum`` format, so
  ``sha256sum -c <file>.sha256`` works), recorded from the bytes received at download time;
- ``<file>.verified``: a JSON stamp ``{"sha256", "size", "mtime_ns", "verified_at"}`` written
  after the last full hash that agreed with the sidecar.

On a load, :func:`verify_file` compares the file's size and mtime_ns with the stamp: equal means
the file was not touched since it was hashed, and no byte is read (hashing 26 GB on every start
would cost minutes). Anything else (no stamp, other size or mtime, stamp for another hash)
triggers a full rehash against the sidecar, and a match writes a fresh stamp. ``force=True``
(``webssl download --verify``) always rehashes.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

from ..errors import CheckpointError
from ..atomic_io import atomic_write_bytes, sha256_file as _size_and_sha256

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(value: str | None) -> bool:
    return bool(value) and bool(_HEX64.match(value.lower()))  # type: ignore[union-attr]


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def sha256_file(path: Path) -> str:
    return _size_and_sha256(path)[1]


def read_sidecar(path: Path) -> str | None:
    """The recorded sha256 of ``path``, or None when there is no (readable) sidecar."""
    try:
        text = sidecar_path(path).read_text().strip()
    except OSError:
        return None
    value = text.split()[0].lower() if text else ""
    if not is_sha256(value):
        raise CheckpointError(f"{sidecar_path(path)}: not a sha256 sidecar (expected "
                              f"'<64 hex digits>  {path.name}'); delete it to re-record the hash")
    return value


def write_sidecar(dest: Path, sha256: str) -> None:
    atomic_write_bytes(sidecar_path(dest), f"{sha256}  {dest.name}\n".encode())


def write_stamp(dest: Path, sha256: str, stat_of: Path | None = None) -> None:
    """Stamp ``dest`` as verified; ``stat_of`` is the file whose size/mtime count (default dest).

    The downloader stamps the ``.part`` file just before renaming it to ``dest`` (a rename keeps
    size and mtime), so a reader never sees a finished file without its stamp.
    """
    st = os.stat(stat_of or dest)
    stamp = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        atomic_write_bytes(stamp_path(dest), (json.dumps(stamp) + "\n").encode())
    except OSError:
        pass   # read-only cache: verification still works, it just rehashes next time


def stamp_matches(path: Path, sha256: str) -> bool:
    """Whether ``path`` was hashed to ``sha256`` and not touched since (size, mtime_ns)."""
    try:
        stamp = json.loads(stamp_path(path).read_text())
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    return (isinstance(stamp, dict) and stamp.get("sha256") == sha256
            and stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns)


def verify_file(path: Path, *, force: bool = False) -> None:
    """Check ``path`` against its ``.sha256`` sidecar; raise CheckpointError when they disagree.

    Cheap when the ``.verified`` stamp still matches the file's size and mtime (no read);
    otherwise, or with ``force``, the whole file is hashed. A file without a sidecar (copied
    in by hand) gets one recorded from its current bytes, with a note on stderr.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    expected = read_sidecar(path)
    if expected is not None and not force and stamp_matches(path, expected):
        return
    actual = sha256_file(path)
    if expected is None:
        try:
            write_sidecar(path, actual)
        except OSError as exc:
            print(f"note: {path} has no {sidecar_path(path).name}; its current content hashes "
                  f"to sha256 {actual}, but could not record it (read-only cache? "
                  f"{exc.strerror or type(exc).__name__}: {sidecar_path(path)}); it will be "
                  f"rehashed on each load", file=sys.stderr)
            return
        print(f"note: {path} has no {sidecar_path(path).name}; recorded sha256 {actual} from "
              f"its current content", file=sys.stderr)
        write_stamp(path, actual)
        return
    if actual != expected:
        raise CheckpointError(
            f"{path}: checksum mismatch: the file hashes to sha256 {actual} but "
            f"{sidecar_path(path).name} records {expected} (recorded when it was downloaded). "
            f"The file is damaged or was replaced; delete it and download it again "
            f"(`webssl download MODEL --verify` does both).")
    write_stamp(path, actual)
