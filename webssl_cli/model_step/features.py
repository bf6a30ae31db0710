"""Which features to compute: parsing ``--features`` and computing them from model outputs.

- ``cls``: final-normed CLS token (B, D)
- ``patch_mean``: mean of the final-normed patch tokens (B, D)
- ``patches``: all final-normed patch tokens (B, T, D)
- ``patch_grid:N``: patch tokens average-pooled to an N x N grid (B, N*N, D)
- ``layers:K``: CLS of the last K blocks, each through the final norm (B, K, D), oldest first
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UsageError

KINDS = ("cls", "patch_mean", "patches", "patch_grid", "layers")


@dataclass(frozen=True)
class Feature:
    kind: str
    arg: int | None = None

    @property
    def name(self) -> str:
        """The name as typed on the command line, e.g. 'patch_grid:4'."""
        return f"{self.kind}:{self.arg}" if self.arg is not None else self.kind

    def shape(self, dim: int, tokens: int) -> tuple[int, ...]:
        """Per-image shape of this feature."""
        return {"cls": (dim,), "patch_mean": (dim,), "patches": (tokens, dim),
                "patch_grid": ((self.arg or 0) ** 2, dim), "layers": (self.arg or 0, dim)}[self.kind]


def parse_features(text: str | tuple[str, ...] | list[str], depth: int, grid: tuple[int, int]) -> tuple[Feature, ...]:
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    if not parts:
        raise UsageError("--features: give at least one of " + ", ".join(KINDS))
    out: list[Feature] = []
    for p in parts:
        kind, _, arg = p.partition(":")
        if kind not in KINDS:
            raise UsageError(f"--features: unknown feature {p!r}; choose from cls, patch_mean, "
                             "patches, patch_grid:N, layers:K")
        needs_arg = kind in ("patch_grid", "layers")
        if needs_arg != bool(arg):
            raise UsageError(f"--features: {kind} {'needs' if needs_arg else 'takes no'} a number"
                             + (f" (e.g. {kind}:4)" if needs_arg else ""))
        n = None
        if needs_arg:
            try:
                n = int(arg)
            except ValueError:
                raise UsageError(f"--features: {p!r}: {arg!r} is not a whole number") from None
            limit = depth if kind == "layers" else min(grid)
            if not 1 <= n <= limit:
                raise UsageError(f"--features: {p!r} must be between 1 and {limit} "
                                 f"({'blocks' if kind == 'layers' else 'patches per side'})")
        f = Feature(kind, n)
        if f in out:
            raise UsageError(f"--features: {p!r} is given twice")
        out.append(f)
    return tuple(out)


def layers_needed(features: tuple[Feature, ...]) -> int:
    return max([f.arg for f in features if f.kind == "layers"] + [1])


def compute(features: tuple[Feature, ...], last: list[tuple[torch.Tensor, torch.Tensor]],
            grid: tuple[int, int], normalize: bool) -> dict[str, torch.Tensor]:
    """``last``: (patch_tokens, cls) of the last blocks after the final norm, oldest first."""
    patches, cls = last[-1]
    out: dict[str, torch.Tensor] = {}
    for f in features:
        if f.kind == "cls":
            v = cls
        elif f.kind == "patch_mean":
            v = patches.float().mean(dim=1)
        elif f.kind == "patches":
            v = patches
        elif f.kind == "patch_grid":
            b, t, d = patches.shape
            g = patches.float().transpose(1, 2).reshape(b, d, grid[0], grid[1])
            v = F.adaptive_avg_pool2d(g, f.arg).flatten(2).transpose(1, 2)
        else:
            v = torch.stack([c for _, c in last[-f.arg:]], dim=1)
        v = v.float()
        if normalize:
            v = F.normalize(v, dim=-1)
        out[f.name] = v
    return out
