"""``kind="files"`` units -> RawSamples: one image file (local path, s3:// or http(s):// URL) each.

Keys: ``unit.source`` is the key root and ends with ``/``; an item under it is keyed by its path
relative to it, any other item (a URL from a list file, an absolute path outside the root) by
itself. A file that cannot be read is yielded with ``data=None`` and the exception's type and
message (FileNotFoundError, HTTPError 404, ...).
"""
from __future__ import annotations

from typing import Any, Iterator

from ..config import InputConfig
from ..units import RawSample, Unit
from .storage import http_session, is_http, read_bytes


def file_key(unit: Unit, item: str) -> str:
    root = unit.source
    if root.endswith("/") and item.startswith(root) and len(item) > len(root):
        return item[len(root):]
    return item


def iter_file_samples(unit: Unit, cfg: InputConfig, part: int,
                      n_parts: int) -> Iterator[RawSample]:
    session: Any = None
    try:
        for index, item in enumerate(unit.items):
            if index % n_parts != part:
                continue
            key = file_key(unit, item)
            try:
                if is_http(item) and session is None:
                    session = http_session()
                data = read_bytes(item, cfg, session)
            except Exception as exc:   # noqa: BLE001 - every failure becomes a ledger row
                yield RawSample(index=index, key=key, source=item, data=None,
                                error=str(exc) or type(exc).__name__,
                                error_type=type(exc).__name__)
                continue
            yield RawSample(index=index, key=key, source=item, data=data)
    finally:
        if session is not None:
            session.close()
