"""Geometric preprocessing of a decoded uint8 image to the model's S x S input.

Three recipes (``PreprocessConfig.mode``), all bicubic with antialias on the uint8 tensor
(torchvision ``v2.functional.resize``: on the CPU two separable passes, each rounded and clamped
to 0..255 like PIL's own uint8 resize, which the official recipe runs on; on a CUDA tensor, and
in ``--decode gpu``'s batched resize, float32 with one rounding at the end. The two differ
most where the intermediate pass clips or rounds: mean well under a level on photos, but up to
~12 levels at hard edges and ~25 on pure noise (QA on CPU tensors); CLS cosine 0.9999-1.0 on
photos, 0.999 on a 1-bit image):

* ``resize-crop`` (default, official Web-SSL README): shorter side to round(S / 0.875),
  longer side ``int(short * long / short_in)`` (torchvision's rule, also HF's), then center crop S.
* ``squash`` (official demo): resize to S x S, aspect ratio not kept.
* ``shortest-crop`` (Hugging Face image processor): shorter side to S, center crop S.

Center crop uses torchvision's offset ``int(round((side - S) / 2))`` (the official recipe);
``shortest-crop`` uses the HF processor's ``(side - S) // 2``. When ``side - S`` is odd the two
differ by one pixel.

Normalization is not done here: workers ship uint8, :func:`normalize` runs on the model device.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import PIL
import torch
import torchvision
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from ..config import PREPROCESS_MODES, PreprocessConfig
from ..errors import UsageError
from .errors import DecodeError

_FOLLOWS = {
    "resize-crop": "official Web-SSL README: Resize(round(S/0.875), bicubic) + CenterCrop(S)",
    "squash": "official Web-SSL demo: Resize((S, S), bicubic)",
    "shortest-crop": "Hugging Face image processor: shortest_edge=S (bicubic) + center crop S",
}


@dataclass(frozen=True)
class ResizePlan:
    """Where an image goes: resized to ``new_h`` x ``new_w``, then rows ``top`` .. ``top + S``
    and columns ``left`` .. ``left + S`` kept (S = ``size``)."""
    new_h: int
    new_w: int
    top: int
    left: int
    size: int


def plan_resize(h: int, w: int, cfg: PreprocessConfig) -> ResizePlan:
    """The resize and crop ``cfg.mode`` gives an h x w image (see the module docstring).
    Raises DecodeError when the resized image would pass the pixel limit."""
    _check_mode(cfg)
    size = cfg.resolution
    if cfg.mode == "squash":
        return ResizePlan(size, size, 0, 0, size)
    new_h, new_w = short_side_size(h, w, cfg.resize_short)
    if new_h * new_w > cfg.max_image_pixels:
        raise DecodeError("ExtremeAspectRatio",
                          f"a {w}x{h} image resized to shorter side {cfg.resize_short} would be "
                          f"{new_w}x{new_h}, over the {cfg.max_image_pixels:,}-pixel limit")
    # both sides are >= S here
    return ResizePlan(new_h, new_w, _offset(new_h, size, cfg.mode), _offset(new_w, size, cfg.mode),
                      size)


def _offset(side: int, size: int, mode: str) -> int:
    """The center crop's offset: torchvision CenterCrop's Python round (the official recipe),
    or the Hugging Face image processor's floor for ``shortest-crop``; 1 pixel apart when
    ``side - size`` is odd."""
    if mode == "shortest-crop":
        return (side - size) // 2
    return int(round((side - size) / 2.0))


def preprocess(img: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, S, S) following ``cfg.mode`` (see the module docstring)."""
    p = plan_resize(int(img.shape[-2]), int(img.shape[-1]), cfg)
    out = _resize(img, p.new_h, p.new_w)
    return out[..., p.top:p.top + p.size, p.left:p.left + p.size].contiguous()


def draft_request(w: int, h: int, cfg: PreprocessConfig) -> tuple[int, int] | None:
    """``--jpeg-draft``: the (width, height) to ask libjpeg's DCT scaling for, so the decoded
    image still covers the resize target on both sides; None when not even a 2x reduction
    would (the exact path then runs, bit for bit)."""
    if not cfg.jpeg_draft:
        return None
    if cfg.mode == "squash":
        need_w = need_h = cfg.resolution
    else:
        need_h, need_w = short_side_size(h, w, cfg.resize_short)
    if w < 2 * need_w or h < 2 * need_h:
        return None
    return need_w, need_h


def short_side_size(h: int, w: int, short: int) -> tuple[int, int]:
    """(new_h, new_w) with the shorter side at ``short`` (torchvision's and HF's truncation)."""
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


def normalize(batch: torch.Tensor, cfg: PreprocessConfig,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 3, H, W) on any device -> (x / 255 - mean) / std, computed in float32.

    The mean/std tensors are made once per device: building them from Python lists on a
    GPU is a synchronous copy that would stall the host behind every queued batch."""
    mean, std = _norm_constants(tuple(cfg.mean), tuple(cfg.std), batch.device)
    out = batch.to(torch.float32).div_(255.0).sub_(mean).div_(std)
    return out if dtype == torch.float32 else out.to(dtype)


@functools.lru_cache(maxsize=16)
def _norm_constants(mean: tuple[float, ...], std: tuple[float, ...],
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(device)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1).to(device)
    return m, s


def describe(cfg: PreprocessConfig) -> dict[str, Any]:
    """What the output provenance records about decoding and preprocessing (JSON-able)."""
    _check_mode(cfg)
    size = cfg.resolution
    squash = cfg.mode == "squash"
    return {
        "mode": cfg.mode,
        "follows": _FOLLOWS[cfg.mode],
        "resolution": size,
        "resize_short": None if squash else cfg.resize_short,
        "resize": (f"to {size}x{size} (aspect ratio not kept)" if squash else
                   f"shorter side to {cfg.resize_short}, longer side int({cfg.resize_short} * long / short)"),
        "crop": None if squash else (
            f"center {size}x{size}, offset floor((side - {size}) / 2) as the Hugging Face image "
            "processor" if cfg.mode == "shortest-crop" else
            f"center {size}x{size}, offset int(round((side - {size}) / 2)) as torchvision "
            "CenterCrop; HF processors use floor((side - S) / 2), 1 pixel apart when side - S is odd"),
        "interpolation": "bicubic",
        "antialias": True,
        "resize_dtype": ("CPU: native uint8 kernel, each separable pass rounded and clamped "
                         "(like PIL); CUDA tensors: float32, clamped and rounded once"),
        "decoder": {"jpeg": "torchvision.io.decode_jpeg (PIL if it refuses the file)",
                    "other": "PIL (first frame)"},
        "exif_orientation": "applied",
        "alpha": ("composited onto white, as transformers' convert_to_rgb"
                  if cfg.mode == "shortest-crop" else
                  "dropped, as PIL convert('RGB') (not composited)"),
        "sixteen_bit": "scaled to 8 bits: round(x * 255 / 65535)",
        "max_image_pixels": cfg.max_image_pixels,
        **({"jpeg_draft": "JPEGs at least twice the resize target decoded at 1/2, 1/4 or 1/8 "
                          "scale by libjpeg DCT scaling (PIL draft), then resized as above"}
           if cfg.jpeg_draft else {}),
        "normalize": {"mean": list(cfg.mean), "std": list(cfg.std),
                      "formula": "(x / 255 - mean) / std, in float32 on the model device"},
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "pillow": PIL.__version__},
    }


def _resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return F.resize(img, [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True)


def _check_mode(cfg: PreprocessConfig) -> None:
    if cfg.mode not in PREPROCESS_MODES:
        raise UsageError(f"unknown preprocessing mode {cfg.mode!r}: choose one of "
                         f"{', '.join(PREPROCESS_MODES)} (--preprocess)")
