"""Where weights live on disk and which environment variables decide it.

Every value is read from the environment at call time (not at import time), so a test or a
long-lived process that changes ``WEBSSL_CACHE`` / ``HF_HOME`` / ``HF_ENDPOINT`` is honoured.

- ``.pth`` checkpoints: ``$WEBSSL_CACHE`` (default ``~/.cache/webssl``), flat, one file per
  checkpoint plus its sidecars (see :mod:`.checksum`).
- Hugging Face snapshots: the standard hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``,
  else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``).
- ``--cache-dir DIR`` replaces both roots: ``DIR/<file>.pth`` and ``DIR/models--org--name/``.
"""
from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def offline_from_env() -> bool:
    """True when the environment forbids network access for weights."""
    return _env_true("WEBSSL_OFFLINE") or _env_true("HF_HUB_OFFLINE")


def pth_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("WEBSSL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/webssl").expanduser()


def hf_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        env = os.environ.get(name)
        if env:
            return Path(os.path.expandvars(env)).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(os.path.expandvars(home)).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hf_repo_folder(repo_id: str) -> str:
    """Folder name of a model repo in the hub cache (``models--org--name``)."""
    return "models--" + repo_id.replace("/", "--")


def hf_endpoint() -> str | None:
    value = os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None


def hf_token() -> str | None:
    """HF_TOKEN if set; None lets huggingface_hub use the token saved by `hf auth login`."""
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None
