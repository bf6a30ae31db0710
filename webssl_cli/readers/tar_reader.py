"""WebDataset tar shard -> RawSamples.

Members are grouped into samples the WebDataset way: the sample key (``__key__``) is the member
path up to the first dot of its file name, the rest is the extension; consecutive members with
the same key form one sample, except that a wanted member (image or json) whose extension the
sample already has starts a new sample with the same key (``x.jpg`` twice, or ``x.jpg`` then
``x.JPG``: two samples, the second keyed ``#2``; WebDataset refuses such shards). The image is
the first of ``jpg, jpeg, png, webp`` present (case insensitive), or of the ``--image-key`` list (``"jpg"`` or ``"jpg,png"``). With ``--keep-json``
the ``.json`` member is parsed into ``RawSample.meta`` (a non-object becomes ``{"json": value}``,
an unparsable one ``{"json_error": message}``: the image is still good).

Row keys are ``"<shard name>/<__key__>"``; a key that repeats later in the same shard gets
``"#2"``, ``"#3"``... (the first suffix no earlier sample of the shard has) so keys stay unique.
Bytes of a member name that are not UTF-8 are escaped as ``\\xNN`` in the key (the shard's
path likewise in ``source``; :func:`~webssl_cli.units.escape_undecodable`) before that check, so
an escaped name that equals a real one later gets a suffix too.
A sample without an image is yielded with ``data=None`` (error_type ``NoImage``). Hard links and
symlinks resolve to earlier members of the same shard (see :mod:`.tar_stream`); an image member
that is a link which cannot be resolved makes the sample fail (``UnresolvedLink``), one that is
a device or FIFO entry too (``SpecialMember``). A shard
that cannot be opened or ends badly raises
:class:`ReadError` after the complete samples before the failure were yielded.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

from ..config import InputConfig
from ..units import RawSample, Unit, escape_undecodable
from .errors import ReadError, TarFormatError
from .keys import KeyDeduper
from .kinds import IMAGE_EXTS
from .storage import StreamError, open_stream
from .tar_stream import Data, SpecialMember, UnresolvedLink, iter_tar_members

DEFAULT_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def image_keys(cfg: InputConfig) -> tuple[str, ...]:
    if not cfg.image_key:
        return DEFAULT_IMAGE_KEYS
    parts = cfg.image_key.replace(";", ",").split(",")
    return tuple(p.strip().lstrip(".").lower() for p in parts if p.strip())


def split_member_name(name: str) -> tuple[str, str]:
    """``"dir/abc.seg.jpg"`` -> ``("dir/abc", "seg.jpg")`` (WebDataset's key / extension rule)."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot <= slash:   # no dot, or a leading-dot file name: the whole name is the key
        return name, ""
    return name[:dot], name[dot + 1:]


def iter_tar_samples(unit: Unit, cfg: InputConfig) -> Iterator[RawSample]:
    exts = image_keys(cfg)
    wanted = set(exts) | ({"json"} if cfg.keep_json else set())

    def want(name: str) -> bool:
        return split_member_name(name)[1].lower() in wanted

    def remember(name: str) -> bool:   # possible targets of links: image and json members
        ext = split_member_name(name)[1].lower()
        return ext in wanted or ext == "json" or f".{ext.rsplit('.', 1)[-1]}" in IMAGE_EXTS

    unique = KeyDeduper()
    index = 0
    current: str | None = None
    group: dict[str, Data] = {}
    try:
        with open_stream(unit.source, cfg) as stream:
            for name, data in iter_tar_members(stream, want, remember):
                key, ext = split_member_name(name)
                repeated = ext.lower() in group and ext.lower() in wanted
                if (key != current or repeated) and current is not None:
                    yield _sample(unit, index, unique(escape_undecodable(current)), group, exts,
                                  cfg)
                    index += 1
                    group = {}
                current = key
                group.setdefault(ext.lower(), data)
            if current is not None:
                yield _sample(unit, index, unique(escape_undecodable(current)), group, exts, cfg)
                index += 1
    except (TarFormatError, StreamError) as exc:
        raise ReadError(unit, f"{exc} (after {index} complete samples)") from None
    except Exception as exc:   # noqa: BLE001 - network/decompression errors of every library
        raise ReadError(unit, f"{type(exc).__name__}: {exc} (after {index} complete samples)") from None


def _sample(unit: Unit, index: int, wds_key: str, group: dict[str, Data],
            exts: tuple[str, ...], cfg: InputConfig) -> RawSample:
    meta = _json_meta(group.get("json")) if cfg.keep_json and "json" in group else None
    key, source = f"{unit.name}/{wds_key}", escape_undecodable(unit.source)
    for ext in exts:
        data = group.get(ext)
        if isinstance(data, (UnresolvedLink, SpecialMember)):
            return RawSample(index=index, key=key, source=source, data=None, meta=meta,
                             error_type=type(data).__name__, error=data.reason)
        if data is not None:
            return RawSample(index=index, key=key, source=source, data=data, meta=meta)
    present = ", ".join(sorted(e or "(no extension)" for e in group))
    return RawSample(index=index, key=key, source=source, data=None, meta=meta,
                     error_type="NoImage",
                     error=f"sample {wds_key!r} has no {'/'.join(exts)} member (it has: {present}); "
                           "choose the image member with --image-key")


def _json_meta(data: Data) -> dict[str, Any]:
    if isinstance(data, (UnresolvedLink, SpecialMember)):
        return {"json_error": data.reason}
    try:
        value = json.loads(data or b"", parse_constant=_no_constant, parse_float=_finite)
    except ValueError as exc:
        return {"json_error": f"unparsable .json member (kept as strict JSON only): {exc}"}
    return value if isinstance(value, dict) else {"json": value}


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of the range of a double")
    return value
