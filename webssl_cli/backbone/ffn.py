"""Feed-forward layers: SwiGLU (Web-DINO) and GELU MLP (Web-MAE, timm names)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLUFFN(nn.Module):
    """out = w3(silu(a) * b) with [a | b] = w12(x): first H outputs gate, second H linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden, bias=True)
        self.w3 = nn.Linear(hidden, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)

    @torch.no_grad()
    def pad_hidden(self, multiple: int) -> int:
        """Grow H to a multiple of ``multiple`` with zero weights: the extra gate and linear
        units are 0, silu(0) * 0 = 0, and w3's extra input columns are 0, so the output is
        unchanged. GEMMs with aligned sizes run faster (dino300m's H = 2736 -> 2816: 1.11x
        on an H100, compiled). Returns the new H."""
        h = self.w3.in_features
        hp = -(-h // multiple) * multiple
        if hp == h:
            return h
        old12, old3 = self.w12, self.w3
        w12 = old12.weight.new_zeros(2 * hp, old12.in_features)
        w12[:h], w12[hp:hp + h] = old12.weight[:h], old12.weight[h:]   # gate half, linear half
        w3 = old3.weight.new_zeros(old3.out_features, hp)
        w3[:, :h] = old3.weight
        b12 = None
        if old12.bias is not None:        # biases keep their own dtype (fp32 when held so)
            b12 = old12.bias.new_zeros(2 * hp)
            b12[:h], b12[hp:hp + h] = old12.bias[:h], old12.bias[h:]
        self.w12 = _linear(w12, b12)
        self.w3 = _linear(w3, old3.bias)
        return hp


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias, requires_grad=False)
    return layer


class GeluMLP(nn.Module):
    """fc2(gelu(fc1(x))) with exact (erf) GELU, as timm's Mlp."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=True)
        self.fc2 = nn.Linear(hidden, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))
