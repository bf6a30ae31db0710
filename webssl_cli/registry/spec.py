"""Architecture description shared by the registry, the backbone and ``--model-config``.

An :class:`ArchSpec` holds only what decides the shapes and the maths of the network.
It is pure data (no torch import) so that ``webssl list-models`` stays fast.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import UsageError

Family = Literal["dino", "mae"]


def swiglu_hidden(embed_dim: int) -> int:
    """SwiGLU hidden width used by the official Web-DINO code: (int(4D*2/3)+7)//8*8."""
    return (int(4 * embed_dim * 2 / 3) + 7) // 8 * 8


@dataclass(frozen=True)
class ArchSpec:
    family: Family
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    img_size: int
    ffn: Literal["swiglu", "gelu_mlp"]
    ffn_hidden: int
    layerscale: bool
    ln_eps: float = 1e-6
    qkv_bias: bool = True
    mask_token: bool = False
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    block_chunks: int = 0

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def tokens(self, resolution: int | None = None) -> int:
        """Number of patch tokens (without CLS) at a square resolution."""
        s = resolution or self.img_size
        return (s // self.patch_size) ** 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def dino(cls, embed_dim: int, depth: int, num_heads: int, img_size: int = 224,
             patch_size: int = 14, block_chunks: int = 4) -> "ArchSpec":
        return cls(family="dino", embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                   patch_size=patch_size, img_size=img_size, ffn="swiglu",
                   ffn_hidden=swiglu_hidden(embed_dim), layerscale=True, mask_token=True,
                   block_chunks=block_chunks)

    @classmethod
    def mae(cls, embed_dim: int, depth: int, num_heads: int, patch_size: int = 14,
            img_size: int = 224) -> "ArchSpec":
        return cls(family="mae", embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                   patch_size=patch_size, img_size=img_size, ffn="gelu_mlp",
                   ffn_hidden=4 * embed_dim, layerscale=False, mask_token=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "model config") -> "ArchSpec":
        """Build from a spec.json-style dict; unknown keys are ignored, missing ones named."""
        required = ("family", "embed_dim", "depth", "num_heads", "patch_size", "img_size")
        missing = [k for k in required if k not in data]
        if missing:
            raise UsageError(f"{origin}: missing required field(s) {', '.join(missing)}; "
                             f"a model config needs {', '.join(required)}")
        family = str(data["family"]).lower()
        if family not in ("dino", "mae"):
            raise UsageError(f"{origin}: family must be 'dino' or 'mae', got {data['family']!r}")
        try:
            d, depth, heads = int(data["embed_dim"]), int(data["depth"]), int(data["num_heads"])
            patch, img = int(data["patch_size"]), int(data["img_size"])
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{origin}: architecture fields must be integers ({exc})") from None
        base = (cls.dino(d, depth, heads, img, patch, block_chunks=0) if family == "dino"
                else cls.mae(d, depth, heads, patch, img))
        names = {f.name for f in dataclasses.fields(cls)}
        overrides = {k: data[k] for k in names if k in data and k not in required}
        if "layerscale" in data and not isinstance(data["layerscale"], bool):
            raise UsageError(f"{origin}: layerscale must be true or false")
        if family == "dino" and "mask_token" not in data:
            overrides["mask_token"] = True
        spec = dataclasses.replace(base, **overrides)
        spec.validate(origin)
        return spec

    @classmethod
    def from_json_file(cls, path: str | Path) -> "ArchSpec":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise UsageError(f"--model-config {p}: file not found") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"--model-config {p}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise UsageError(f"--model-config {p}: expected a JSON object with architecture fields")
        return cls.from_dict(data, origin=str(p))

    def validate(self, origin: str = "model config") -> None:
        if self.embed_dim % self.num_heads:
            raise UsageError(f"{origin}: embed_dim {self.embed_dim} is not divisible by "
                             f"num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            raise UsageError(f"{origin}: img_size {self.img_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        if self.ffn not in ("swiglu", "gelu_mlp"):
            raise UsageError(f"{origin}: ffn must be 'swiglu' or 'gelu_mlp', got {self.ffn!r}")
