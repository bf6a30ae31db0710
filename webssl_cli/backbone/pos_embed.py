"""Position-embedding interpolation, identical to the official Web-DINO code.

The table is sized at the training resolution (M x M patch grid). For an input grid of
h0 x w0 patches it is resized bicubically in float32 with
``scale_factor=((h0 + 0.1) / M, (w0 + 0.1) / M)``, antialias off. Using the scale factor
(not the target size) is what makes it equal to the official code (transformers' Dinov2
interpolates by size and differs by ~2e-2 at non-native sizes).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def interpolate_pos_embed(pos_embed: torch.Tensor, h0: int, w0: int, offset: float = 0.1,
                          antialias: bool = False) -> torch.Tensor:
    """pos_embed (1, 1+M*M, D) -> (1, 1+h0*w0, D) in pos_embed's dtype."""
    n = pos_embed.shape[1] - 1
    if n == h0 * w0 and h0 == w0:
        return pos_embed
    m = int(math.sqrt(n))
    if m * m != n:
        raise ValueError(f"position embedding has {n} patch rows, not a square grid")
    dim = pos_embed.shape[-1]
    pe = pos_embed.float()
    cls_pe, patch_pe = pe[:, :1], pe[:, 1:]
    grid = patch_pe.reshape(1, m, m, dim).permute(0, 3, 1, 2)
    if offset:
        kwargs = {"scale_factor": ((h0 + offset) / m, (w0 + offset) / m)}
    else:
        kwargs = {"size": (h0, w0)}
    grid = F.interpolate(grid, mode="bicubic", antialias=antialias, **kwargs)
    if grid.shape[-2:] != (h0, w0):
        raise RuntimeError(f"position-embedding interpolation produced {tuple(grid.shape[-2:])}, "
                           f"expected {(h0, w0)}")
    patch_pe = grid.permute(0, 2, 3, 1).reshape(1, h0 * w0, dim)
    return torch.cat((cls_pe, patch_pe), dim=1).to(pos_embed.dtype)
