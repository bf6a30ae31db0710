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
import subprocess
import tempfile
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator

from ..config import InputConfig

HTTP_TIMEOUT = (10.0, 120.0)      # (connect, read) seconds
_STREAM_BLOCK = 8 << 20


class StreamError(Exception):
    """A source that cannot be opened or that ended badly (message says why)."""


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


def http_session() -> Any:
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = "webssl-cli"
    return session


def read_bytes(location: str, cfg: InputConfig, session: Any | None = None) -> bytes:
    """All bytes of one file: a local path, ``s3://`` object or ``http(s)://`` URL (raises)."""
    if location.startswith("s3://"):
        return s3_filesystem(cfg).cat_file(location)
    if is_http(location):
        session = session or http_session()
        with session.get(location, timeout=HTTP_TIMEOUT) as resp:
            resp.raise_for_status()
            return resp.content
    with open(local_path(location), "rb") as fh:
        return fh.read()


@contextmanager
def open_stream(source: str, cfg: InputConfig) -> Iterator[BinaryIO]:
    """A sequential binary stream over a shard; gunzipped when its bytes start with the gzip
    magic ``1f 8b`` (whatever the name or command says: ``pipe:zcat x.tar.gz`` is read as is).

    Raises :class:`StreamError` when the source cannot be opened, or (``pipe:``) when the
    command exits non-zero after its output was read.
    """
    opener = _open_pipe if source.startswith("pipe:") else (
        _open_http if is_http(source) else _open_s3 if source.startswith("s3://") else _open_local)
    with opener(source, cfg) as raw:
        stream = _Peeked(raw, 2)
        if stream.head == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
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


@contextmanager
def _open_http(source: str, cfg: InputConfig) -> Iterator[BinaryIO]:
    session = http_session()
    try:
        resp = session.get(source, stream=True, timeout=HTTP_TIMEOUT)
    except Exception as exc:   # noqa: BLE001
        raise StreamError(f"cannot connect: {type(exc).__name__}: {exc}") from None
    with session, resp:
        if resp.status_code >= 400:
            raise StreamError(f"HTTP {resp.status_code} {resp.reason}")
        resp.raw.decode_content = True
        yield resp.raw


@contextmanager
def _open_pipe(source: str, cfg: InputConfig) -> Iterator[BinaryIO]:
    command = source[len("pipe:"):]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=err,
                                bufsize=1 << 20)
        assert proc.stdout is not None
        try:
            yield proc.stdout   # type: ignore[misc]
        except Exception as exc:   # bad output: if the command failed, that is the news
            code = _wait_or_kill(proc, 2.0)
            if code not in (0, None, -9):
                raise StreamError(_exit_message(code, err)) from exc
            raise
        except BaseException:      # the consumer stopped early
            _wait_or_kill(proc, 0.0)
            raise
        while proc.stdout.read(1 << 20):   # drain padding after the end-of-archive marker
            pass
        proc.stdout.close()
        code = proc.wait()
        if code != 0:
            raise StreamError(_exit_message(code, err))


def _wait_or_kill(proc: subprocess.Popen, timeout: float) -> int | None:
    assert proc.stdout is not None
    try:
        code = proc.wait(timeout=timeout) if timeout else None
    except subprocess.TimeoutExpired:
        code = None
    if code is None:
        proc.kill()
        proc.wait()
    proc.stdout.close()
    return code


def _exit_message(code: int, err: BinaryIO) -> str:
    err.seek(0)
    tail = err.read()[-400:].decode("utf-8", "replace").strip()
    return f"command exited with status {code}" + (f": {tail}" if tail else "")
