"""Closed-form size and cost of an architecture: parameters, FLOPs, bytes. No torch."""
from __future__ import annotations

from .spec import ArchSpec


def param_count(spec: ArchSpec, resolution: int | None = None) -> int:
    """Parameters of the backbone as the official checkpoints hold it (pos-embed at img_size)."""
    d, p, h = spec.embed_dim, spec.patch_size, spec.ffn_hidden
    n = 3 * p * p * d + d            # patch embedding conv
    n += d                           # cls token
    n += (1 + spec.tokens(resolution)) * d  # position embedding
    if spec.mask_token:
        n += d
    per_block = 2 * d + 2 * d        # norm1, norm2
    per_block += 3 * d * d + (3 * d if spec.qkv_bias else 0)  # fused qkv
    per_block += d * d + d           # proj
    if spec.ffn == "swiglu":
        per_block += d * 2 * h + 2 * h + h * d + d
    else:
        per_block += d * h + h + h * d + d
    if spec.layerscale:
        per_block += 2 * d
    n += spec.depth * per_block
    n += 2 * d                       # final norm
    return n


def flops_per_image(spec: ArchSpec, resolution: int | None = None) -> float:
    """Forward FLOPs (2 x multiply-accumulates, attention included) for one square image."""
    d, h = spec.embed_dim, spec.ffn_hidden
    t = spec.tokens(resolution)
    n = t + 1
    ffn_macs = 3 * d * h if spec.ffn == "swiglu" else 2 * d * h
    block = n * (4 * d * d + ffn_macs) + 2 * n * n * d
    macs = spec.depth * block + t * 3 * spec.patch_size ** 2 * d
    return 2.0 * macs


def feature_bytes(spec: ArchSpec, resolution: int | None = None, itemsize: int = 2) -> dict[str, int]:
    """Bytes per image for the CLS vector and for all patch tokens at the given dtype size."""
    d = spec.embed_dim
    return {"cls": itemsize * d, "patches": itemsize * d * spec.tokens(resolution)}
