"""Hugging Face snapshots: find a complete one in the hub cache, or fetch it with huggingface_hub.

The cache layout is huggingface_hub's own (``models--org--name/{refs/main, snapshots/<commit>/,
blobs/<etag>}``), so snapshots are shared with transformers and ``hf download``. Looking one up
(:func:`cached_snapshot`) reads two small files and stats a few paths: no network, no import
of huggingface_hub. Only ``config.json``, ``*.safetensors`` and ``model.safetensors.index.json``
are fetched.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import CheckpointError, StopSignal, WebsslError
from .checksum import is_sha256, sha256_file
from .locking import exclusive
from .paths import hf_endpoint, hf_repo_folder, hf_token

ALLOW_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json"]
INDEX = "model.safetensors.index.json"


def missing_in_snapshot(folder: Path) -> list[str]:
    """Files a usable snapshot needs that ``folder`` lacks (empty list: complete)."""
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if (folder / "model.safetensors").is_file():
        return missing
    index = folder / INDEX
    if not index.is_file():
        return missing + ["model.safetensors"]
    try:
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, AttributeError):
        return missing + [f"{INDEX} (unreadable)"]
    if not shards:
        return missing + [f"{INDEX} (empty weight_map)"]
    return missing + [s for s in shards if not (folder / s).is_file()]


def snapshot_folder(repo_id: str, cache_root: Path, revision: str = "main") -> Path | None:
    """The snapshot folder ``refs/<revision>`` points to, complete or not; None if unknown."""
    repo = cache_root / hf_repo_folder(repo_id)
    try:
        commit = (repo / "refs" / revision).read_text().strip()
    except OSError:
        return None
    if not commit:
        return None
    return repo / "snapshots" / commit


def cached_snapshot(repo_id: str, cache_root: Path) -> Path | None:
    """A complete cached snapshot of ``repo_id`` (main), or None."""
    folder = snapshot_folder(repo_id, cache_root)
    if folder is None or not folder.is_dir() or missing_in_snapshot(folder):
        return None
    return folder


def verify_snapshot(folder: Path, *, remove_bad: bool = False) -> int:
    """Rehash every safetensors file whose blob is named by its sha256; return how many.

    Raises CheckpointError naming the damaged file (deleted first with ``remove_bad``, so the
    snapshot reads as incomplete and the next download fetches it again). Files whose blob name is not a sha256 (not
    stored through git LFS, or a copied snapshot without symlinks) cannot be checked and are
    skipped.
    """
    checked = 0
    for f in sorted(folder.glob("*.safetensors")):
        blob = Path(os.path.realpath(f))
        if not is_sha256(blob.name):
            continue
        actual = sha256_file(blob)
        if actual != blob.name.lower():
            if remove_bad:
                for p in (f, blob):
                    p.unlink(missing_ok=True)
            what = "It was deleted" if remove_bad else f"Delete {blob}"
            raise CheckpointError(
                f"{f}: checksum mismatch: the blob {blob} hashes to sha256 {actual}, its name "
                f"(the Hub's sha256) says {blob.name}. {what} and run the download again.")
        checked += 1
    return checked


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0][:300] if text.strip() else type(exc).__name__


def _http_status(exc: BaseException | None) -> int | None:
    """The HTTP status of a huggingface_hub error whose server did answer, else None."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _answered(repo_id: str, where: str, status: int, exc: BaseException | None) -> WebsslError:
    """The server was reached and refused: say what it answered, not 'cannot reach'."""
    detail = _first_line(exc) if exc is not None else f"HTTP {status}"
    if status == 404:
        return WebsslError(f"{repo_id}: not found at {where} (HTTP 404: {detail}); the server "
                           f"answered, but has no such repository or file. Check HF_ENDPOINT "
                           f"(a mirror may lack this model), or use --source pth.")
    if status in (401, 403):
        return WebsslError(f"{repo_id}: {where} refused access (HTTP {status}: {detail}). "
                           f"Check HF_TOKEN (or `hf auth login`), or use --source pth.")
    return WebsslError(f"{repo_id}: {where} answered HTTP {status} ({detail}); the server is "
                       f"reachable but failed. Run the same command again later, or use "
                       f"--source pth.")


class _QuietTqdm:
    """A progress-bar class that shows nothing (``progress=False``)."""

    def __new__(cls, *args, **kwargs):   # noqa: D102 - built lazily to avoid importing tqdm
        from tqdm.auto import tqdm
        kwargs["disable"] = True
        kwargs.pop("name", None)
        return tqdm(*args, **kwargs)


def download_snapshot(repo_id: str, cache_root: Path, *, progress: bool = True) -> Path:
    """Fetch the weights of ``repo_id`` into the hub cache at ``cache_root``; return the snapshot.

    One process per cache downloads (lock ``<cache>/.locks/webssl-models--org--name.lock``);
    others wait and then find the snapshot complete, without contacting the Hub.
    """
    lock = cache_root / ".locks" / f"webssl-{hf_repo_folder(repo_id)}.lock"
    with exclusive(lock, repo_id):
        found = cached_snapshot(repo_id, cache_root)
        if found is not None:
            return found
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError,
                                            LocalEntryNotFoundError, RepositoryNotFoundError)
        endpoint = hf_endpoint()
        where = endpoint or "https://huggingface.co"
        if progress:
            print(f"downloading {repo_id} from {where} into {cache_root}", file=sys.stderr,
                  flush=True)
        kwargs = {} if progress else {"tqdm_class": _QuietTqdm}
        try:
            path = Path(snapshot_download(repo_id, allow_patterns=ALLOW_PATTERNS,
                                          cache_dir=str(cache_root), endpoint=endpoint,
                                          token=hf_token(), **kwargs))
        except (RepositoryNotFoundError, GatedRepoError) as exc:
            raise WebsslError(f"{repo_id}: the repository is not available at {where} "
                              f"({type(exc).__name__}). Check HF_ENDPOINT / HF_TOKEN, or use "
                              f"--source pth.") from None
        except LocalEntryNotFoundError as exc:
            # huggingface_hub reports "look in the cache instead" for any failed API call;
            # its cause tells a server that answered (404, 5xx) from one that could not be reached
            answered = _http_status(exc.__cause__)
            if answered is not None:
                raise _answered(repo_id, where, answered, exc.__cause__) from None
            raise WebsslError(f"{repo_id}: cannot reach {where} and the weights are not cached "
                              f"({_first_line(exc.__cause__ or exc)}). Check the network or "
                              f"HF_ENDPOINT, or use --source pth.") from None
        except HfHubHTTPError as exc:
            status = _http_status(exc)
            if status is not None:
                raise _answered(repo_id, where, status, exc) from None
            raise WebsslError(f"{repo_id}: download from {where} failed: {_first_line(exc)}. "
                              f"Run the same command again to retry.") from None
        except (KeyboardInterrupt, StopSignal) as exc:   # huggingface_hub keeps its .incomplete blobs
            raise type(exc)(f"interrupted; rerun the same command to resume the download "
                            f"(partial files kept in {cache_root / hf_repo_folder(repo_id)}"
                            f"/blobs)") from None
        except OSError as exc:
            raise WebsslError(f"{repo_id}: download from {where} failed: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
                              f"Run the same command again to retry.") from None
        missing = missing_in_snapshot(path)
        if missing:
            raise WebsslError(f"{repo_id}: the repository at {where} lacks "
                              f"{', '.join(missing)} (snapshot {path}); it is not a Web-SSL "
                              f"safetensors repository. Try --source pth.")
        verify_snapshot(path, remove_bad=True)
        return path
