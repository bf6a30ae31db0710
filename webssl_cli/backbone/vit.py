"""The Web-SSL vision transformer (both families) with the official output names.

Parameter names follow the official unchunked Web-DINO / timm Web-MAE layout
(``blocks.N.attn.qkv``, ``blocks.N.mlp.w12`` or ``blocks.N.mlp.fc1``, ``blocks.N.ls1.gamma``,
...), so converted checkpoints load with a strict key-for-key match.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import UsageError
from ..registry.spec import ArchSpec
from .block import Block
from .patch_embed import PatchEmbed
from .pos_embed import interpolate_pos_embed


class WebSSLViT(nn.Module):
    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        d = spec.embed_dim
        self.patch_size = spec.patch_size
        self.patch_embed = PatchEmbed(spec.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + spec.grid ** 2, d))
        if spec.mask_token:   # held by the checkpoints, unused for inference
            self.mask_token = nn.Parameter(torch.zeros(1, d))
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.depth))
        self.norm = nn.LayerNorm(d, eps=spec.ln_eps)

    # -- helpers -----------------------------------------------------------------------
    def set_attention_backend(self, backend: str) -> None:
        for blk in self.blocks:
            blk.attn.set_backend(backend)

    def check_input(self, x: torch.Tensor) -> tuple[int, int]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise UsageError(f"expected a (B, 3, H, W) image batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise UsageError(f"input size {h}x{w} is not a multiple of the patch size {p}; "
                             f"use a resolution like {max(p, h // p * p)} or {(h // p + 1) * p}")
        return h // p, w // p

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        h0, w0 = self.check_input(x)
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype),
                            tokens), dim=1)
        pos = interpolate_pos_embed(self.pos_embed, h0, w0, self.spec.interpolate_offset,
                                    self.spec.interpolate_antialias)
        return tokens + pos

    # -- official outputs --------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``x_norm_clstoken`` (B,D), ``x_norm_patchtokens`` (B,T,D), ``x_prenorm`` (B,1+T,D)."""
        t = self.prepare_tokens(x)
        for blk in self.blocks:
            t = blk(t)
        normed = self.norm(t)
        return {"x_norm_clstoken": normed[:, 0], "x_norm_patchtokens": normed[:, 1:],
                "x_prenorm": t}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["x_norm_clstoken"]

    def get_intermediate_layers(self, x: torch.Tensor, n: int | Sequence[int] = 1,
                                reshape: bool = False, return_class_token: bool = False,
                                norm: bool = True):
        """Outputs of the last ``n`` blocks (or of the block indices in ``n``), official semantics."""
        depth = len(self.blocks)
        wanted = set(range(depth - n, depth)) if isinstance(n, int) else set(n)
        bad = [i for i in wanted if not 0 <= i < depth]
        if bad or not wanted:
            raise UsageError(f"get_intermediate_layers: block indices {sorted(bad) or n} outside "
                             f"0..{depth - 1}")
        t = self.prepare_tokens(x)
        outputs = []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i in wanted:
                outputs.append(t)
        if norm:
            outputs = [self.norm(o) for o in outputs]
        cls_tokens = [o[:, 0] for o in outputs]
        outputs = [o[:, 1:] for o in outputs]
        if reshape:
            b, _, h, w = x.shape
            p = self.patch_size
            outputs = [o.reshape(b, h // p, w // p, -1).permute(0, 3, 1, 2).contiguous()
                       for o in outputs]
        if return_class_token:
            return tuple(zip(outputs, cls_tokens))
        return tuple(outputs)
