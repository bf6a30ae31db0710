"""Resize + center crop of many different-size images at once, as two matrix products.

An antialiased bicubic resize is separable and linear: output = Wy @ image @ Wx^T per channel,
where row i of Wy holds the filter weights output row i takes from the input rows (same for
Wx and columns). Keeping only the cropped rows of Wy and Wx folds the center crop in. Images
of different sizes are zero-padded to the largest in their chunk and the weights to match,
so a chunk costs one copy per image into the padded buffer plus a handful of kernels (the
weights, two batched matmuls, rounding) instead of about six kernels per image: on a GPU the
per-image Python and launches of ``preprocess`` held the GIL against the model's thread for
every image of every batch.

The weights are torch's own antialias bicubic weights (``F.interpolate(..., antialias=True)``,
the filter PIL uses, a = -0.5), computed in float32 on the images' device; the result is what
torchvision's resize gives a uint8 tensor on a GPU (float32, clamped to 0..255, rounded once),
up to float32 summation order: at most one level apart, rarely. That assumes plain float32
matmuls, torch's default; with TF32 switched on for the whole process (e.g.
``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1``) about a tenth of a level of error per pass is added,
so more values land one level off: far below what changes a feature. Unlike torch's CUDA
kernel, which refuses downscales past ~47x (its weights must fit in shared memory), any
scale works here, as on the CPU path.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .transforms import ResizePlan

CHUNK_PIXELS = 16_000_000    # padded input pixels per chunk (~190 MB as float32 RGB)


def resize_crop_batch(images: Sequence[torch.Tensor], plans: Sequence[ResizePlan],
                      max_pixels: int = CHUNK_PIXELS) -> list[torch.Tensor]:
    """uint8 (3, h_i, w_i) images and their plans -> uint8 (3, S, S) each, in input order.

    Images already at their resize size (e.g. img2dataset's 256 px output for a 224 model)
    are only cropped, all in one copy. The others are sorted by size and cut into chunks of
    at most ``max_pixels`` padded pixels (one image alone may pass it), so padding stays
    small and memory bounded."""
    out: list[torch.Tensor | None] = [None] * len(images)
    crop_only = [i for i, (im, p) in enumerate(zip(images, plans))
                 if tuple(im.shape[-2:]) == (p.new_h, p.new_w)]
    if crop_only:
        cropped = torch.stack([_crop(images[i], plans[i]) for i in crop_only])
        for i, o in zip(crop_only, cropped):
            out[i] = o
    skip = set(crop_only)
    order = sorted((i for i in range(len(images)) if i not in skip),
                   key=lambda i: tuple(images[i].shape[-2:]))
    chunk: list[int] = []
    hmax = wmax = 0
    for i in order:
        h, w = images[i].shape[-2:]
        grown_h, grown_w = max(hmax, h), max(wmax, w)
        if chunk and (len(chunk) + 1) * grown_h * grown_w > max_pixels:
            _place(chunk, images, plans, out)
            chunk, grown_h, grown_w = [], h, w
        chunk.append(i)
        hmax, wmax = grown_h, grown_w
    if chunk:
        _place(chunk, images, plans, out)
    return out  # type: ignore[return-value]


def _crop(img: torch.Tensor, p: ResizePlan) -> torch.Tensor:
    return img[:, p.top:p.top + p.size, p.left:p.left + p.size]


def _place(chunk: list[int], images, plans, out: list) -> None:
    done = resize_crop_chunk([images[i] for i in chunk], [plans[i] for i in chunk])
    for i, o in zip(chunk, done):
        out[i] = o


def resize_crop_chunk(images: Sequence[torch.Tensor],
                      plans: Sequence[ResizePlan]) -> torch.Tensor:
    """One chunk: (n, 3, S, S) uint8. All plans must share one output size S."""
    size = plans[0].size
    if any(p.size != size for p in plans):
        raise ValueError("resize_crop_chunk: plans of different output sizes in one chunk")
    device = images[0].device
    n = len(images)
    hs = [int(im.shape[-2]) for im in images]
    ws = [int(im.shape[-1]) for im in images]
    hmax, wmax = max(hs), max(ws)
    # (n, Hmax, 3, Wmax): rows first, so the row pass is one batched matmul with no transpose
    if min(hs) == hmax and min(ws) == wmax:          # all one size: one copy, no padding
        padded = torch.stack([im.permute(1, 0, 2) for im in images])
    else:
        padded = torch.zeros((n, hmax, 3, wmax), dtype=torch.uint8, device=device)
        for k, im in enumerate(images):
            padded[k, :hs[k], :, :ws[k]].copy_(im.permute(1, 0, 2))
    # rows' and columns' weights in one go: (2n, S, max(Hmax, Wmax)), zero past each side
    lens, targets, starts = _params(hs, ws, plans, device)
    scale = max(max(h / p.new_h for h, p in zip(hs, plans)),
                max(w / p.new_w for w, p in zip(ws, plans)))
    weights = aa_bicubic_weights(lens, targets, starts, size, max(hmax, wmax), taps_for(scale))
    wy, wx = weights[:n, :, :hmax], weights[n:, :, :wmax]               # (n, S, Hmax|Wmax)
    rows = torch.bmm(wy, padded.to(torch.float32).view(n, hmax, 3 * wmax))   # (n, S, 3*Wmax)
    both = torch.bmm(rows.view(n, size * 3, wmax), wx.transpose(1, 2))     # (n, S*3, S)
    both = both.view(n, size, 3, size).permute(0, 2, 1, 3)
    return both.clamp_(0, 255).round_().to(torch.uint8).contiguous()


def _params(hs: list[int], ws: list[int], plans: Sequence[ResizePlan],
            device: torch.device) -> torch.Tensor:
    """(3, 2n) float32 on ``device``: input lengths, resized lengths, crop starts; rows of
    the n images first, then their columns. One small host-to-device copy (pinned and
    non-blocking on CUDA)."""
    t = torch.tensor([hs + ws, [p.new_h for p in plans] + [p.new_w for p in plans],
                      [p.top for p in plans] + [p.left for p in plans]], dtype=torch.float32)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def taps_for(scale: float) -> int:
    """Input positions one output position can touch at ``scale`` = in / out (with margin)."""
    return int(4.0 * max(scale, 1.0)) + 3


def aa_bicubic_weights(in_len: torch.Tensor, out_len: torch.Tensor, start: torch.Tensor,
                       length: int, in_max: int, taps: int) -> torch.Tensor:
    """(n, length, in_max) float32: the weights output positions ``start`` .. ``start +
    length`` of an ``in_len`` -> ``out_len`` antialiased bicubic resize give each input
    position (zero past ``in_len``); each row sums to 1. Follows torch's antialias kernels:
    scale = in / out, support 2 * max(scale, 1), window [trunc(c - support + 0.5),
    trunc(c + support + 0.5)) around center c = scale * (i + 0.5), taps filter((j - c + 0.5)
    / max(scale, 1)) normalised to sum 1. Only the ``taps`` positions from the window's start
    are computed (``taps_for``), then spread into the dense matrix."""
    device = in_len.device
    scale = (in_len / out_len)[:, None, None]                                 # (n, 1, 1)
    stretch = scale.clamp(min=1.0)
    i = start[:, None, None] + torch.arange(length, device=device, dtype=torch.float32)[:, None]
    center = scale * (i + 0.5)                                                # (n, L, 1)
    lo = torch.trunc(center - 2.0 * stretch + 0.5).clamp_(min=0)
    hi = torch.minimum(torch.trunc(center + 2.0 * stretch + 0.5), in_len[:, None, None])
    j = lo + torch.arange(taps, device=device, dtype=torch.float32)           # (n, L, T)
    x = ((j - center + 0.5) / stretch).abs_()
    near = ((1.5 * x - 2.5) * x) * x + 1.0                                    # |x| < 1
    far = (((-0.5 * x + 2.5) * x - 4.0) * x) + 2.0                            # 1 <= |x| < 2
    w = torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))
    w = w * (j < hi)
    total = w.sum(-1, keepdim=True)
    w = w / torch.where(total == 0, torch.ones_like(total), total)
    dense = torch.zeros((in_len.shape[0], length, in_max), dtype=torch.float32, device=device)
    # positions past the end carry weight 0; clamped onto the last column, adding 0 is exact
    return dense.scatter_add_(2, j.clamp_(max=in_max - 1).long(), w)
