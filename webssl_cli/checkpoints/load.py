"""Load any supported checkpoint into a model built on the meta device: strict, lean.

Every backbone key must be present, no unknown key may be left, every shape must match;
otherwise :class:`CheckpointMismatchError` (exit 2) lists the first few of each with counts, naming the file
and the model. Tensors are assigned (``load_state_dict(assign=True)``), converted to the
target dtype one at a time, so peak host memory stays near one copy of the weights.
"""
from __future__ import annotations

import ctypes
import hashlib
import mmap
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .convert import dechunk, from_hf, looks_like_hf, strip_prefix, unwrap
from .errors import CheckpointMismatchError
from .hf_config import check_hf_config
from .read import read_checkpoint

# Parameters kept in float32 when the model is held in a half dtype (as autocast would).
FP32_SUFFIXES = ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "norm.weight",
                 "norm.bias", "ls1.gamma", "ls2.gamma", "pos_embed", "cls_token", "mask_token")


@dataclass(frozen=True)
class LoadReport:
    path: str
    layout: str           # official | official-chunked | teacher | timm | hf
    tensors: int


def to_our_names(path: str | Path, family: str, model_name: str, shapes_only: bool = False):
    """Read a checkpoint file/dir and convert its keys to our names. Returns (sd, layout, raw);
    ``shapes_only``: meta tensors, no data read (see :func:`check_fits`)."""
    raw = read_checkpoint(path, shapes_only)
    origin = str(raw.path)
    if raw.kind == "hf" or looks_like_hf(raw.tensors):
        return from_hf(dict(raw.tensors), family, origin), "hf", raw
    is_teacher = "teacher" in raw.tensors
    sd = strip_prefix(unwrap(raw.tensors, origin), ("module.", "backbone."))
    chunked = any(k.count(".") >= 3 and k.startswith("blocks.") and k.split(".")[2].isdigit()
                  for k in sd)
    sd = dechunk(sd)
    layout = "teacher" if is_teacher else ("official-chunked" if chunked else
                                          ("timm" if family == "mae" else "official"))
    return sd, layout, raw


def match_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], origin: str,
                     model_name: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {expected[k]}"
                   for k in set(expected) & set(sd) if tuple(sd[k].shape) != expected[k])
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", wrong)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
        raise CheckpointMismatchError(
            f"{origin} does not fit {model_name}: " + "; ".join(parts) +
            ". Check that the file belongs to this model (or pass the matching --model / "
            "--model-config).")


def check_fits(model: nn.Module, path: str | Path, model_name: str) -> str:
    """Check, without reading the tensors' data, that ``path`` is a checkpoint that fits
    ``model`` (built on the meta device): the errors :func:`load_weights` would raise for a
    file that is no checkpoint, is cut short in its index, or holds another architecture.
    A run calls it before it writes anything, so a wrong file leaves no settings behind.
    Returns the layout found."""
    sd, layout, raw = to_our_names(path, model.spec.family, model_name, shapes_only=True)
    if raw.hf_config is not None:
        check_hf_config(raw.hf_config, model.spec, str(Path(raw.path) / "config.json"), model_name)
    match_state_dict(model, sd, str(raw.path), model_name)
    return layout


def load_weights(model: nn.Module, path: str | Path, model_name: str,
                 dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> LoadReport:
    """Strictly load ``path`` into ``model`` (possibly on the meta device), in place."""
    spec = model.spec
    sd, layout, raw = to_our_names(path, spec.family, model_name)
    if raw.hf_config is not None:
        check_hf_config(raw.hf_config, spec, str(Path(raw.path) / "config.json"), model_name)
    match_state_dict(model, sd, str(raw.path), model_name)
    target = {}
    for k, v in sd.items():
        dt = dtype if (dtype is not None and not k.endswith(FP32_SUFFIXES)) else torch.float32
        target[k] = v.to(device=device, dtype=dt)
        if target[k].data_ptr() != v.data_ptr():
            release_pages(v)   # the source copy is done with: keep peak RSS near one copy
        sd[k] = None   # drop the source reference as we go
    model.load_state_dict(target, strict=True, assign=True)
    return LoadReport(path=str(raw.path), layout=layout, tensors=len(target))


def release_pages(t: torch.Tensor) -> None:
    """Drop the whole pages of a CPU tensor we no longer need from this process's resident
    set (``madvise(MADV_DONTNEED)``). For the memory-mapped checkpoint the pages are simply
    re-read from the file if ever touched again; never call it on a tensor still in use."""
    if t.device.type != "cpu" or _LIBC is None or t.numel() == 0:
        return
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    first = (start + _PAGE - 1) // _PAGE * _PAGE
    last = end // _PAGE * _PAGE
    if last > first:
        _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), 4)  # DONTNEED


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()
_PAGE = mmap.PAGESIZE


def file_fingerprint(path: str | Path, full: bool = False) -> str:
    """A cheap identity of a weights file/dir (size+mtime+head hash) or its full sha256."""
    p = Path(path)
    files = sorted(f for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file()
                   and f.suffix in (".pth", ".pt", ".safetensors", ".json"))
    h = hashlib.sha256()
    for f in files:
        sidecar = f.with_name(f.name + ".sha256")
        if sidecar.exists() and not full:
            h.update(sidecar.read_text().split()[0].encode())
            continue
        with open(f, "rb") as fh:
            if full:
                for chunk in iter(lambda: fh.read(1 << 24), b""):
                    h.update(chunk)
            else:
                h.update(f"{f.name}:{f.stat().st_size}".encode())
                h.update(fh.read(1 << 20))
    return h.hexdigest()
