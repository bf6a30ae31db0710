"""Crash-safe file primitives shared by every stage that writes (store, weights cache):
temp name + fsync + rename, exclusive create, checksums.

Every file the store writes goes through here. A reader (or a rank after a crash) sees
either no file or the whole file, never a partial one. Temp names start with a dot and
end in ``.tmp`` so no reader glob (``*.npy``, ``*.parquet``, ``*.json``) picks them up.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

# link() is unsupported on some filesystems (FAT, some FUSE/object-store mounts):
# exclusive_create then falls back to O_CREAT|O_EXCL.
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK}
_CHUNK = 8 << 20


def temp_path(path: Path) -> Path:
    """A hidden, process-unique temp name next to ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make a rename/create in ``path`` durable; a no-op where directories cannot be fsynced."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success fsync it and rename it to
    ``path`` (then fsync the folder); on any error remove the temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):   # gone, or a read-only file system: keep the error
            tmp.unlink()
        named = _naming(exc, path, tmp) if isinstance(exc, OSError) else exc
        if named is exc:
            raise
        raise named from exc
    fsync_dir(path.parent)


def _naming(exc: OSError, path: Path, tmp: Path) -> OSError:
    """``exc`` naming the file being written, not its temp name or nothing (a full disk's
    ENOSPC carries no file name): same errno, so the same OSError subclass."""
    if exc.filename not in (None, str(tmp), tmp) or exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror, str(path))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp in the same folder, fsync, rename, fsync dir)."""
    with atomic_output(path) as tmp:
        _write_synced(tmp, data)


def exclusive_create(path: str | Path, data: bytes) -> bool:
    """Create ``path`` with ``data`` only if it does not exist; True if this call created it.

    The content is written and fsynced under a temp name first, then hard-linked to
    ``path``: link() fails if ``path`` exists and is atomic on local filesystems, NFS and
    Lustre, so nobody ever sees a half-written file. (On NFS a retried link can report
    EEXIST although it succeeded; the temp file's link count tells the truth.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        try:
            _write_synced(tmp, data)
        except OSError as exc:
            named = _naming(exc, path, tmp)
            if named is exc:
                raise
            raise named from exc
        try:
            os.link(tmp, path)
        except FileExistsError:
            if os.stat(tmp).st_nlink != 2:
                return False
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            return _exclusive_create_no_link(path, data)
    finally:
        with contextlib.suppress(OSError):   # gone, or a read-only file system: keep the error
            tmp.unlink()
    fsync_dir(path.parent)
    return True


def _exclusive_create_no_link(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    return True


def sha256_file(path: str | Path) -> tuple[int, str]:
    """(size in bytes, hex sha256) of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def remove_quietly(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def prune_empty_dirs(path: Path, stop: Path) -> None:
    """Remove ``path`` and its empty parents up to (not including) ``stop``."""
    path, stop = Path(path), Path(stop)
    while path != stop and stop in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


def read_json_file(path: str | Path):
    """Parsed JSON of ``path``; None when it is missing or still empty (being created by an
    exclusive create on a filesystem without link()). Bad JSON raises ValueError."""
    import json
    try:
        text = Path(path).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not text.strip():
        return None
    return json.loads(text)
