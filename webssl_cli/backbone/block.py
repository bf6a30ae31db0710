"""Pre-norm transformer block: x += ls1(attn(norm1(x))); x += ls2(ffn(norm2(x)))."""
from __future__ import annotations

import torch
from torch import nn

from ..registry.spec import ArchSpec
from .attention import Attention
from .ffn import GeluMLP, SwiGLUFFN
from .layer_scale import LayerScale


class Block(nn.Module):
    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        d = spec.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=spec.ln_eps)
        self.attn = Attention(d, spec.num_heads, qkv_bias=spec.qkv_bias)
        self.ls1 = LayerScale(d) if spec.layerscale else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=spec.ln_eps)
        self.mlp = (SwiGLUFFN(d, spec.ffn_hidden) if spec.ffn == "swiglu"
                    else GeluMLP(d, spec.ffn_hidden))
        self.ls2 = LayerScale(d) if spec.layerscale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))
