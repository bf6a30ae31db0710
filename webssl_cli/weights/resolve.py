"""Decide which checkpoint a run uses: ``--weights``, the cache, or a download (unless offline).

This is the only place that turns a :class:`WeightsRequest` into a path. The error messages for
a missing cache in offline mode are built here, with the exact command to fetch the weights on
a machine with internet and where to copy them.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, UsageError, WeightsMissingError
from ..registry.models import ModelRecord
from .checksum import sidecar_path, verify_file
from .hf import cached_snapshot, download_snapshot, missing_in_snapshot, snapshot_folder, \
    verify_snapshot
from .http_download import download_file, lock_path, part_path, remove_cached
from .locking import exclusive
from .paths import _env_true, hf_cache_root, hf_repo_folder, offline_from_env, pth_cache_root

SOURCES = ("hf", "pth")


@dataclass(frozen=True)
class WeightsRequest:
    model: ModelRecord
    source: str | None = None       # "hf" | "pth"; None = hf where the model has a repo, else pth
    teacher: bool = False           # the *_ssl_teacher.pth checkpoint (pth only)
    cache_dir: str | None = None    # root for both sources (default $WEBSSL_CACHE / HF hub cache)
    offline: bool = False           # also HF_HUB_OFFLINE=1 or WEBSSL_OFFLINE=1
    progress: bool = True
    verify: bool = False            # rehash the cached file fully (`webssl download --verify`)


def check_source(source: str | None, weights: str | None = None) -> None:
    """``--source`` is hf or pth (any case), and is not given with ``--weights``, which names
    the checkpoint and never downloads (UsageError, exit 2)."""
    if source is None:
        return
    if source.lower() not in SOURCES:
        raise UsageError(f"--source must be 'hf' or 'pth', got {source!r}")
    if weights:
        raise UsageError("--source picks what to download; --weights names a file: give one "
                         "of them")


def check_cache_dir(cache_dir: str | None) -> None:
    """``--cache-dir`` is a folder, or a path where one can be made (UsageError, exit 2)."""
    if cache_dir and Path(cache_dir).expanduser().exists() \
            and not Path(cache_dir).expanduser().is_dir():
        raise UsageError(f"--cache-dir {cache_dir} is a file, not a folder: give a folder "
                         "(it is made if missing)")


def effective_source(req: WeightsRequest) -> str:
    """The source a request uses, after checking it exists for this model."""
    rec = req.model
    check_source(req.source)
    source = req.source.lower() if req.source else None
    if req.teacher:
        if source == "hf":
            raise UsageError(f"teacher checkpoints are only published as .pth files; use "
                             f"`--source pth --teacher` for {rec.name}")
        if not rec.teacher_file:
            raise UsageError(f"{rec.name} has no released teacher checkpoint (only Web-DINO "
                             f"models have *_ssl_teacher.pth); drop --teacher")
        return "pth"
    if source is None:
        source = "hf" if rec.hf_repo else "pth"
    if source == "hf" and not rec.hf_repo:
        raise UsageError(f"{rec.name} has no Hugging Face repository; use --source pth "
                         f"(the official .pth file {rec.pth_file})")
    if source == "pth" and not rec.pth_file:
        raise UsageError(f"{rec.name} is only released on Hugging Face ({rec.hf_repo}); "
                         f"use --source hf")
    return source


def is_offline(req: WeightsRequest) -> bool:
    return req.offline or offline_from_env()


def _why_offline(req: WeightsRequest) -> str:
    if req.offline:
        return "--offline is set"
    names = [n for n in ("HF_HUB_OFFLINE", "WEBSSL_OFFLINE") if _env_true(n)]
    return f"{'/'.join(n + '=1' for n in names)} is set"


def _pth_missing(req: WeightsRequest, dest: Path) -> WeightsMissingError:
    name = req.model.name
    teacher = " --teacher" if req.teacher else ""
    partial = part_path(dest)
    note = (f" A partial download {partial} ({partial.stat().st_size} bytes) is there; going "
            f"online resumes it." if partial.exists() else "")
    return WeightsMissingError(
        f"weights for {name} are not in the cache (looked for {dest}) and {_why_offline(req)}."
        f"{note} On a machine with internet run: `webssl download {name} --source pth{teacher} "
        f"--cache-dir DIR`, then copy DIR/{dest.name} and DIR/{sidecar_path(dest).name} to "
        f"{dest.parent}/ (or pass --weights FILE).")


def _hf_missing(req: WeightsRequest, root: Path) -> WeightsMissingError:
    rec = req.model
    repo_dir = root / hf_repo_folder(rec.hf_repo or "")
    folder = snapshot_folder(rec.hf_repo or "", root)
    if folder is not None and folder.is_dir():
        looked = f"{folder}, which lacks {', '.join(missing_in_snapshot(folder))}"
    else:
        looked = f"{repo_dir}/snapshots/<commit>/ with config.json and model.safetensors"
    return WeightsMissingError(
        f"weights for {rec.name} ({rec.hf_repo}) are not in the Hugging Face cache (looked for "
        f"{looked}) and {_why_offline(req)}. On a machine with internet run: `webssl download "
        f"{rec.name} --source hf --cache-dir DIR`, then copy the folder "
        f"DIR/{repo_dir.name} to {root}/ keeping its symlinks (`cp -a` or `rsync -a`), or pass "
        f"--weights DIR/{repo_dir.name}/snapshots/<commit> (or use --source pth).")


def _drop_if_unchanged(dest: Path, seen: os.stat_result) -> None:
    """Delete a damaged cached file, unless another process already replaced it."""
    with exclusive(lock_path(dest), dest.name):
        try:
            st = dest.stat()
        except FileNotFoundError:
            return
        if (st.st_size, st.st_mtime_ns, st.st_ino) == (seen.st_size, seen.st_mtime_ns,
                                                       seen.st_ino):
            remove_cached(dest)


def _resolve_pth(req: WeightsRequest, offline: bool) -> Path:
    rec = req.model
    fname = rec.teacher_file if req.teacher else rec.pth_file
    url = rec.teacher_url() if req.teacher else rec.pth_url()
    assert fname and url
    dest = pth_cache_root(req.cache_dir) / fname
    if dest.is_file():
        seen = dest.stat()
        try:
            verify_file(dest, force=req.verify)
            if req.verify:
                print(f"verified {dest}: sha256 matches {sidecar_path(dest).name}",
                      file=sys.stderr)
            return dest
        except CheckpointError as exc:
            _reject_cached(exc, offline)
            print(f"note: not using {dest}; downloading it again", file=sys.stderr)
            _drop_if_unchanged(dest, seen)
    if offline:
        raise _pth_missing(req, dest)
    return download_file(url, dest, progress=req.progress)


def _reject_cached(exc: CheckpointError, offline: bool) -> None:
    """A cached copy failed verification: fatal offline (nothing to replace it with),
    otherwise a warning before it is downloaded again."""
    if offline:
        raise exc
    print(f"warning: {exc}", file=sys.stderr)


def _resolve_hf(req: WeightsRequest, offline: bool) -> Path:
    repo = req.model.hf_repo
    assert repo
    root = hf_cache_root(req.cache_dir)
    found = cached_snapshot(repo, root)
    if found is not None:
        if not req.verify:
            return found
        try:
            n = verify_snapshot(found, remove_bad=not offline)
            print(f"verified {n} safetensors file(s) of {repo} against their sha256",
                  file=sys.stderr)
            return found
        except CheckpointError as exc:
            _reject_cached(exc, offline)
    if offline:
        raise _hf_missing(req, root)
    return download_snapshot(repo, root, progress=req.progress)


def resolve_weights(req: WeightsRequest, explicit: str | None = None) -> Path:
    """Path of the checkpoint to load: a ``.pth`` file or an HF snapshot folder.

    ``explicit`` (``--weights``) wins and never touches the network; it must exist. Otherwise
    the cache is used, after downloading into it unless offline (``req.offline``,
    ``HF_HUB_OFFLINE=1`` or ``WEBSSL_OFFLINE=1``), in which case a missing checkpoint raises
    WeightsMissingError (exit 2) saying how to fetch it elsewhere.
    """
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise UsageError(f"--weights {explicit}: no such file or directory")
        if path.is_file() and sidecar_path(path).is_file():
            verify_file(path, force=req.verify)
        return path
    check_cache_dir(req.cache_dir)
    source = effective_source(req)
    offline = is_offline(req)
    if source == "pth":
        return _resolve_pth(req, offline)
    return _resolve_hf(req, offline)


def cached_sources(record: ModelRecord, cache_dir: str | None = None) -> dict[str, bool]:
    """Which sources of ``record`` are cached: ``{"hf": ..., "pth": ...}`` (stat calls only)."""
    hf = bool(record.hf_repo) and cached_snapshot(record.hf_repo or "",
                                                  hf_cache_root(cache_dir)) is not None
    pth = bool(record.pth_file) and (pth_cache_root(cache_dir) / (record.pth_file or "")).is_file()
    return {"hf": hf, "pth": pth}
