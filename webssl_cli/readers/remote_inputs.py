"""Planned pieces of remote inputs: ``s3://`` prefixes, objects and globs (listed with s3fs)
and ``http(s)://`` URLs (checked with one HEAD request; HTTP cannot be listed).

An HTTP input the server refuses for good (404, 403, any 4xx but 408/429) is a usage error
(exit 2: the input is wrong). One that cannot be reached for a transient reason (refused or
dropped connection, timeout, 408/429/5xx) is retried (:mod:`.retry`), then is a runtime error
(exit 1: :class:`~.retry.NetworkUnavailable`): the input may be right, the server is down."""
from __future__ import annotations

from typing import Any

from ..config import InputConfig
from ..errors import UsageError
from .kinds import FileSet, Piece, TarShard, is_list, kind_of, stem
from .local_inputs import decode_list, from_lines, parquet_piece
from .patterns import static_dir
from .retry import (NetworkUnavailable, Transient, TransientNetworkError, is_transient_status,
                    network_errors_transient, status_failure, with_retries)
from .storage import http_session, http_timeout, s3_filesystem


def _s3_call(spec: str, what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:   # noqa: BLE001 - botocore/s3fs raise many types
        hint = ""
        if "credential" in str(exc).lower():
            hint = " (set AWS credentials: environment, ~/.aws/credentials or a role)"
        elif "connect" in type(exc).__name__.lower() or "connect" in str(exc).lower():
            hint = " (check --s3-endpoint-url / WEBSSL_S3_ENDPOINT_URL)"
        raise UsageError(f"--input {spec}: cannot {what}: {type(exc).__name__}: {exc}{hint}") from None


def expand_s3(spec: str, cfg: InputConfig) -> list[Piece]:
    fs = s3_filesystem(cfg)
    path = spec[len("s3://"):]
    if not spec.endswith("/") and "/" in path.strip("/") and \
            _s3_call(spec, "check the object", fs.isfile, path):
        return _s3_objects(spec, [spec], cfg, single=True)
    objects = sorted(_s3_call(spec, "list the bucket/prefix", fs.find, path))
    if not objects:
        raise UsageError(f"--input {spec}: nothing under this S3 prefix")
    return _s3_objects(spec, ["s3://" + o for o in objects], cfg, single=False)


def _s3_objects(spec: str, urls: list[str], cfg: InputConfig, single: bool) -> list[Piece]:
    kinds: dict[str | None, list[str]] = {}
    for url in urls:
        kinds.setdefault(kind_of(url), []).append(url)
    if single and None in kinds:   # a list file on S3
        _check_list_name(spec, spec)
        text = _s3_call(spec, "read the list", s3_filesystem(cfg).cat_file, spec)
        return from_lines(spec, decode_list(spec, text),
                           spec.rsplit("/", 1)[0], stem(spec), cfg)
    present = [k for k in ("image", "tar", "parquet") if kinds.get(k)]
    if not present:
        raise UsageError(f"--input {spec}: no images, .tar shards or .parquet files under it")
    if len(present) > 1:
        raise UsageError(f"--input {spec}: mixes {' and '.join(present)} objects; pass them as "
                         "separate inputs (e.g. a glob)")
    if present == ["tar"]:
        return [TarShard(u, stem(u)) for u in kinds["tar"]]
    if present == ["parquet"]:
        return [parquet_piece(spec, u, cfg) for u in kinds["parquet"]]
    root = spec if spec.endswith("/") else (spec.rsplit("/", 1)[0] + "/" if single else spec + "/")
    return [FileSet(root, stem(root) or "images", kinds["image"])]


def missing_s3(urls: list[str], cfg: InputConfig, spec: str) -> list[str]:
    if not urls:
        return []
    fs = s3_filesystem(cfg)
    listed: dict[str, set[str]] = {}
    missing = []
    for url in urls:
        parent = url[len("s3://"):].rsplit("/", 1)[0]
        if parent not in listed:
            listed[parent] = set(_s3_call(spec, "list the bucket/prefix", fs.ls, parent, False))
        if url[len("s3://"):] not in listed[parent]:
            missing.append(url)
    return missing


def glob_s3(pattern: str, cfg: InputConfig, spec: str) -> list[str]:
    found = _s3_call(spec, "list the bucket/prefix", s3_filesystem(cfg).glob,
                     pattern[len("s3://"):])
    return sorted("s3://" + f for f in found)


def expand_http(spec: str, urls: list[str], cfg: InputConfig) -> list[Piece]:
    _check_reachable(spec, urls[0])
    kinds = {kind_of(u) for u in urls}
    if kinds == {"tar"}:
        return [TarShard(u, stem(u)) for u in urls]
    if kinds == {"parquet"}:
        return [parquet_piece(spec, u, cfg) for u in urls]
    if kinds == {"image"}:
        root = static_dir(spec) if len(urls) > 1 else urls[0].rsplit("/", 1)[0] + "/"
        return [FileSet(root, stem(root) or "images", sorted(urls))]
    if len(urls) == 1:   # a list of paths/URLs served over http
        _check_list_name(spec, urls[0])
        with http_session() as session:
            resp = _planning_request(spec, urls[0], lambda t: session.get(urls[0], timeout=t))
        return from_lines(spec, decode_list(spec, resp.content), urls[0].rsplit("/", 1)[0],
                          stem(urls[0]), cfg)
    raise UsageError(f"--input {spec}: unknown input kind (expected .tar shards, .parquet files "
                     "or images by their extension)")


def _check_list_name(spec: str, url: str) -> None:
    if not is_list(url):
        raise UsageError(f"--input {spec}: unknown input kind: {url} is not a .tar shard, a "
                         ".parquet file, an image or a list of paths/URLs (.txt, .lst, .list) "
                         "by its extension; rename it, or pass a local list file that names it")


def _check_reachable(spec: str, url: str) -> None:
    with http_session() as session:
        _planning_request(spec, url, lambda t: _head(session, url, t))


def _head(session: Any, url: str, timeout: tuple[float, float]) -> Any:
    """HEAD ``url``; a server without HEAD is asked for the body, of which none is read."""
    resp = session.head(url, timeout=timeout, allow_redirects=True)
    if resp.status_code in (405, 501):
        with session.get(url, timeout=timeout, stream=True) as got:
            return got
    return resp


def _planning_request(spec: str, url: str, request: Any) -> Any:
    """``request(timeout)`` for ``--input spec``, retried while it fails transiently; a final
    4xx or an unusable URL is a UsageError, a failure that persists is NetworkUnavailable."""
    timeout = http_timeout()

    def attempt() -> Any:
        try:
            with network_errors_transient(timeout[1]):
                resp = request(timeout)
        except Transient:
            raise
        except Exception as exc:   # noqa: BLE001 - an unusable URL, TLS, ...
            raise UsageError(f"--input {spec}: cannot reach {url}: {type(exc).__name__}: "
                             f"{exc}") from None
        if is_transient_status(resp.status_code):
            raise status_failure(resp)
        return resp

    try:
        resp = with_retries(url, attempt)
    except TransientNetworkError as exc:
        raise NetworkUnavailable(
            f"--input {spec}: cannot reach {url}: {exc.summary} (the input itself is not at "
            "fault)") from None
    if resp.status_code >= 400:
        raise UsageError(f"--input {spec}: {url} answers HTTP {resp.status_code} {resp.reason}")
    return resp
