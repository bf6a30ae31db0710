"""A minimal Hugging Face Hub on 127.0.0.1: what ``snapshot_download`` of a public repo calls.

Point ``HF_ENDPOINT`` (or ``endpoint=``) at ``HFServer.endpoint``. Implemented, as the installed
huggingface_hub (2.x) uses them without xet:

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: repo info with ``sha``;
- ``GET /api/models/{repo}/tree/{rev}?recursive=...``: the file list (``*.safetensors`` are
  listed as LFS files whose ``oid`` is their sha256, like on the Hub; no ``xetHash``);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` (git blob sha1, or
  the sha256 for LFS files with ``X-Linked-Etag``/``X-Linked-Size``), ``Content-Length``,
  ``Range`` support;
- errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound) as the Hub does.

``corrupt`` maps ``(repo, path)`` to bytes served instead of the real ones (same headers), to
test checksum verification.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .http_range_server import BackgroundServer, _FileHandler, send_body

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(".safetensors")


class _Repo:
    def __init__(self, repo_id: str, files: dict[str, bytes]) -> None:
        self.repo_id = repo_id
        self.files = dict(sorted(files.items()))
        listing = "".join(f"{p}:{git_blob_sha1(d)}\n" for p, d in self.files.items())
        self.commit = hashlib.sha1(f"{repo_id}\n{listing}".encode()).hexdigest()
        self.sha256 = {p: hashlib.sha256(d).hexdigest() for p, d in self.files.items()}

    def etag(self, path: str) -> str:
        return self.sha256[path] if is_lfs(path) else git_blob_sha1(self.files[path])

    def info(self) -> dict:
        return {"id": self.repo_id, "modelId": self.repo_id, "sha": self.commit, "private": False,
                "gated": False, "disabled": False, "tags": [], "downloads": 0, "likes": 0,
                "lastModified": "2025-04-01T00:00:00.000Z",
                "siblings": [{"rfilename": p} for p in self.files]}

    def tree(self) -> list[dict]:
        out = []
        for p, d in self.files.items():
            entry = {"type": "file", "path": p, "size": len(d), "oid": git_blob_sha1(d)}
            if is_lfs(p):
                entry["lfs"] = {"oid": self.sha256[p], "size": len(d), "pointerSize": 134}
            out.append(entry)
        return out


class _HubHandler(_FileHandler):
    owner: "HFServer"

    def _error(self, code: int, error_code: str, message: str, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(code)
        self.send_header("X-Error-Code", error_code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> None:
        owner = self.owner
        owner.record(self)
        parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
        if len(parts) >= 3 and parts[0] == "api" and parts[1] == "models":
            return self._api(parts[2:])
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        self._error(404, "RepoNotFound", f"no route for {self.path}")

    def _repo(self, repo_id: str, revision: str | None) -> _Repo | None:
        repo = self.owner.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        if revision not in (None, "main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo

    def _api(self, rest: list[str]) -> None:
        if self.command != "GET" or len(rest) < 2:
            return self._error(404, "RepoNotFound", "unsupported api call")
        repo_id = "/".join(rest[:2])
        if len(rest) == 2:
            repo = self._repo(repo_id, None)
            return None if repo is None else self._json(repo.info())
        if rest[2] == "revision" and len(rest) == 4:
            repo = self._repo(repo_id, rest[3])
            return None if repo is None else self._json(repo.info())
        if rest[2] == "tree" and len(rest) >= 4:
            repo = self._repo(repo_id, rest[3])
            return None if repo is None else self._json(repo.tree())
        self._error(404, "RepoNotFound", "unsupported api call")

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        if path not in repo.files:
            return self._error(404, "EntryNotFound", f"{path} not found", commit=repo.commit)
        data = self.owner.corrupt.get((repo_id, path), repo.files[path])
        start = 0
        rng = _RANGE.match(self.headers.get("Range", "").strip())
        if rng is not None and self.command == "GET":
            start = min(int(rng.group(1)), len(data))
        body = data[start:]
        self.send_response(206 if rng is not None and self.command == "GET" else 200)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", f'"{repo.etag(path)}"')
        if is_lfs(path):
            self.send_header("X-Linked-Etag", f'"{repo.etag(path)}"')
            self.send_header("X-Linked-Size", str(len(repo.files[path])))
        if start or (rng is not None and self.command == "GET"):
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if self.command == "GET" else len(data)))
        self.end_headers()
        if self.command == "GET":
            send_body(self, body)

    do_GET = _route
    do_HEAD = _route


class HFServer(BackgroundServer):
    """``HFServer({"facebook/webssl-x": Path("hf_folder")})``; ``endpoint`` is HF_ENDPOINT."""

    handler = _HubHandler

    def __init__(self, repos: dict[str, Path | dict[str, bytes]]) -> None:
        super().__init__()
        self.repos: dict[str, _Repo] = {}
        self.corrupt: dict[tuple[str, str], bytes] = {}
        for repo_id, src in repos.items():
            files = src if isinstance(src, dict) else {
                p.relative_to(src).as_posix(): p.read_bytes()
                for p in sorted(Path(src).rglob("*")) if p.is_file()}
            self.repos[repo_id] = _Repo(repo_id, files)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def commit(self, repo_id: str) -> str:
        return self.repos[repo_id].commit
