"""Read a checkpoint from disk into a flat ``{name: tensor}`` dict, safely and lazily.

- ``.pth``/``.pt``: ``torch.load(weights_only=True, mmap=True)`` — never unpickles arbitrary
  objects; a file that needs it is refused with an explanation.
- ``.safetensors`` (single file) and HF directories (``config.json`` + ``model.safetensors``
  or ``model.safetensors.index.json`` with shards): memory-mapped through safetensors.
"""
from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, UsageError


@dataclass
class RawCheckpoint:
    path: Path
    kind: str                     # "pth" | "safetensors" | "hf"
    tensors: dict[str, Any]       # name -> tensor, or nested dicts for wrapped .pth files
    hf_config: dict | None = None


def read_checkpoint(path: str | Path, shapes_only: bool = False) -> RawCheckpoint:
    """The checkpoint at ``path``; ``shapes_only``: its tensors as meta tensors (names, shapes
    and dtypes, no data read), to check that it fits a model before anything else is done."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"weights {p}: no such file or directory")
    if p.is_dir():
        return _read_hf_dir(p, shapes_only)
    if p.suffix == ".safetensors":
        return RawCheckpoint(p, "safetensors", _load_safetensors(p, shapes_only))
    if p.name == "config.json":
        return _read_hf_dir(p.parent, shapes_only)
    if p.suffix == ".json":
        raise _not_a_checkpoint(p, p.read_bytes()[:512])
    obj = _load_pth(p)
    return RawCheckpoint(p, "pth", _as_meta(obj) if shapes_only else obj)


def _as_meta(obj: Any) -> Any:
    """Tensors (in nested dicts) -> meta tensors of the same shape and dtype."""
    if isinstance(obj, torch.Tensor):
        return torch.empty(obj.shape, dtype=obj.dtype, device="meta")
    if isinstance(obj, dict):
        return {k: _as_meta(v) for k, v in obj.items()}
    return obj


ACCEPTED = ("a PyTorch checkpoint (.pth/.pt, as torch.save writes it), a .safetensors file, "
            "or a Hugging Face model folder (config.json + model.safetensors)")
_ZIP, _PICKLE = b"PK\x03\x04", b"\x80"   # torch.save's zip format / legacy pickle format


def _not_a_checkpoint(p: Path, head: bytes) -> UsageError:
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        what = ("it is JSON text; an architecture spec goes to --model-config, an HF "
                "config.json must sit in its model folder (pass the folder)")
    else:
        try:
            head.decode("utf-8")
            what = f"it is text, starting {stripped[:24].decode('utf-8')!r}"
        except UnicodeDecodeError:
            what = f"unknown binary format, starting {head[:8]!r}"
    return UsageError(f"weights {p}: not a PyTorch checkpoint, safetensors file or Hugging Face "
                      f"folder ({what}). Weights must be {ACCEPTED}.")


def _load_pth(p: Path) -> dict[str, Any]:
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: the file is empty (0 bytes); if it is a cached download, "
                              "run `webssl download MODEL` again, otherwise check the copy")
    try:
        with open(p, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise UsageError(f"weights {p}: cannot read the file ({exc.strerror or exc})") from None
    is_tar = len(head) >= 262 and head[257:262] == b"ustar"   # torch's oldest format
    if not (head.startswith(_ZIP) or head.startswith(_PICKLE) or is_tar):
        raise _not_a_checkpoint(p, head)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{p}: refusing to load: the file needs unsafe unpickling of arbitrary Python "
            f"objects, which could run code ({str(exc).splitlines()[0][:200]}). Real Web-SSL "
            "checkpoints hold only tensors; if you trust this file, re-save its state dict with "
            "`torch.save(state_dict, path)` and use that.") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{p}: cannot read the checkpoint, it looks truncated or corrupt "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). If it is a cached "
            "download, run `webssl download MODEL --verify` to fetch it again; otherwise "
            "check the copy.") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: expected a state dict (a dict of tensors), got "
                              f"{type(obj).__name__}")
    return obj


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
              "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def _load_safetensors(p: Path, shapes_only: bool = False) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file
    try:
        if not shapes_only:
            return load_file(str(p), device="cpu")
        with safe_open(str(p), "pt") as f:
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta",
                                   dtype=_ST_DTYPES.get(f.get_slice(k).get_dtype(),
                                                        torch.float32))
                    for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{p}: cannot read the safetensors file, it looks truncated or "
                              f"corrupt ({exc}). If it is a cached download, run `webssl "
                              f"download MODEL --verify` to fetch it again; otherwise check the "
                              f"copy.") from None


def _read_hf_dir(d: Path, shapes_only: bool = False) -> RawCheckpoint:
    cfg_path = d / "config.json"
    config = None
    if cfg_path.exists():
        try:
            config = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{cfg_path}: not valid JSON ({exc})") from None
    index = d / "model.safetensors.index.json"
    single = d / "model.safetensors"
    if single.exists():
        return RawCheckpoint(d, "hf", _load_safetensors(single, shapes_only), config)
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from None
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            sp = d / shard
            if not sp.exists():
                raise CheckpointError(f"{index} lists shard {shard}, which is missing from {d}; "
                                      "download the repository again")
            tensors.update(_load_safetensors(sp, shapes_only))
        return RawCheckpoint(d, "hf", tensors, config)
    pths = sorted(d.glob("*.pth"))
    if len(pths) == 1:
        obj = _load_pth(pths[0])
        return RawCheckpoint(pths[0], "pth", _as_meta(obj) if shapes_only else obj)
    raise UsageError(f"weights {d}: a directory without model.safetensors or "
                     "model.safetensors.index.json (expected a Hugging Face model folder)")
