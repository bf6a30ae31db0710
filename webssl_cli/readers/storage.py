"""Where input bytes come from: local paths, ``s3://`` (fsspec/s3fs), ``http(s)://`` (requests)
and ``pipe:`` commands.

S3 uses the standard AWS credential chain (environment, ``~/.aws/credentials``/``config``,
instance roles). The endpoint is, first found: ``InputConfig.s3_endpoint_url``
(``--s3-endpoint-url``), ``$WEBSSL_S3_ENDPOINT_URL``, then botocore's own
``$AWS_ENDPOINT_URL_S3`` / ``$AWS_ENDPOINT_URL`` / config-file ``endpoint_url``.
"""
from __future__ import annotations

import gzip
import os
import stat
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator

from ..config import InputConfig
from .errors import NotARegularFile, StreamError
from .http_stream import http_bytes, http_session, http_timeout, open_http
from .pipe_stream import open_pipe

_STREAM_BLOCK = 8 << 20     # s3fs read-ahead block of a shard stream

__all__ = ["StreamError", "http_session", "http_timeout", "is_http", "is_url", "local_path",
           "open_stream", "read_bytes", "s3_filesystem"]


def is_url(location: str) -> bool:
    return location.startswith(("s3://", "http://", "https://"))


def is_http(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def local_path(location: str) -> str:
    """``file://`` URLs and ``~`` to a plain local path."""
    if location.startswith("file://"):
        location = location[len("file://"):]
    return os.path.expanduser(location)


def s3_endpoint(cfg: InputConfig) -> str | None:
    return cfg.s3_endpoint_url or os.environ.get("WEBSSL_S3_ENDPOINT_URL") or None


_AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
            "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
_S3_CACHE: dict[tuple[Any, ...], Any] = {}


def s3_filesystem(cfg: InputConfig) -> Any:
    """An s3fs filesystem for ``cfg``: one per process, endpoint and AWS environment (a forked
    worker makes its own; listings are never cached, so a plan sees the bucket as it is now)."""
    import s3fs

    endpoint = s3_endpoint(cfg)
    key = (os.getpid(), endpoint, tuple(os.environ.get(v) for v in _AWS_ENV))
    fs = _S3_CACHE.get(key)
    if fs is None:
        client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
        fs = s3fs.S3FileSystem(client_kwargs=client_kwargs, skip_instance_cache=True,
                               use_listings_cache=False,
                               config_kwargs={"connect_timeout": 10, "read_timeout": 120,
                                              "retries": {"max_attempts": 3}})
        _S3_CACHE[key] = fs
    return fs


def read_bytes(location: str, cfg: InputConfig, session: Any | None = None,
               retries: int | None = None) -> bytes:
    """All bytes of one file: a local path, ``s3://`` object or ``http(s)://`` URL (raises;
    ``retries``: of a URL's transient failures, default ``retry.RETRIES``)."""
    if location.startswith("s3://"):
        return s3_filesystem(cfg).cat_file(location)
    if is_http(location):
        return http_bytes(location, session or http_session(), retries)
    return _local_file_bytes(local_path(location))


def _local_file_bytes(path: str) -> bytes:
    """A regular file's bytes. Opened non-blocking and checked first: a FIFO or device with
    an image's name would block the reader or never end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
            raise NotARegularFile(f"{path} is {what}, not a regular file; only files are read "
                                  "(move it out of the input, or read a stream with pipe:cat)")
        return fh.read()


@contextmanager
def open_stream(source: str, cfg: InputConfig) -> Iterator[BinaryIO]:
    """A sequential binary stream over a shard; gunzipped when its bytes start with the gzip
    magic ``1f 8b`` (whatever the name or command says: ``pipe:zcat x.tar.gz`` is read as is).

    Raises :class:`StreamError` when the source cannot be opened, or (``pipe:``) when the
    command exits non-zero after its output was read.
    """
    if source.startswith("pipe:"):
        opened = open_pipe(source)
    elif is_http(source):
        opened = open_http(source)
    else:
        opened = (_open_s3 if source.startswith("s3://") else _open_local)(source, cfg)
    with opened as raw:
        stream = _Peeked(raw, 2)
        if stream.head == _GZIP_MAGIC:
            with _Gunzipped(fileobj=stream, mode="rb") as unzipped:
                yield unzipped   # type: ignore[misc]
        else:
            yield stream   # type: ignore[misc]


_GZIP_MAGIC = b"\x1f\x8b"


class _Peeked:
    """A read-only stream whose first ``n`` bytes were read ahead (``head``) and are served
    again before the rest of ``raw``."""

    def __init__(self, raw: BinaryIO, n: int) -> None:
        self.raw = raw
        parts, left = [], n
        while left:
            chunk = raw.read(left)
            if not chunk:
                break
            parts.append(chunk)
            left -= len(chunk)
        self.head = b"".join(parts)
        self._pending = self.head

    def read(self, size: int = -1) -> bytes:
        if not self._pending:
            return self.raw.read(size)
        if size is None or size < 0:
            data, self._pending = self._pending + self.raw.read(), b""
            return data
        data, self._pending = self._pending[:size], self._pending[size:]
        if len(data) < size and not self._pending:
            data += self.raw.read(size - len(data))
        return data

    def bound_reads(self, on: bool) -> None:
        """The tar reader is between archives (``on``) or in one: a ``pipe:`` stream bounds
        its waits in between (:class:`~.pipe_stream.PipeOutput`)."""
        bound = getattr(self.raw, "bound_reads", None)
        if bound is not None:
            bound(on)


class _Gunzipped(gzip.GzipFile):
    """A gunzipped shard that passes :meth:`_Peeked.bound_reads` on to its compressed stream."""

    def bound_reads(self, on: bool) -> None:
        self.fileobj.bound_reads(on)   # type: ignore[union-attr]


@contextmanager
def _open_local(source: str, cfg: InputConfig) -> Iterator[BinaryIO]:
    try:
        fh = open(local_path(source), "rb", buffering=1 << 20)
    except OSError as exc:
        raise StreamError(f"cannot open: {exc.strerror or exc}") from None
    with fh:
        yield fh


@contextmanager
def _open_s3(source: str, cfg: InputConfig) -> Iterator[BinaryIO]:
    try:
        fh = s3_filesystem(cfg).open(source, "rb", block_size=_STREAM_BLOCK,
                                     cache_type="readahead")
    except Exception as exc:   # noqa: BLE001 - botocore/s3fs raise many types
        raise StreamError(f"cannot open: {type(exc).__name__}: {exc}") from None
    with fh:
        yield fh
