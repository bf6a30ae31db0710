"""Architecture description shared by the registry, the backbone and ``--model-config``.

An :class:`ArchSpec` holds only what decides the shapes and the maths of the network.
It is pure data (no torch import) so that ``webssl list-models`` stays fast.
"""
from __future__ import annotations

import dataclasses
import json
import math
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

    def position_embedding(self, resolution: int) -> str:
        """How the position embedding is used at ``resolution`` (recorded with the output).
        Web-MAE's official code runs at 224 only: other sizes are outside its reference."""
        grid = resolution // self.patch_size
        if grid == self.grid:
            return f"as trained ({grid}x{grid} patches)"
        text = (f"interpolated from the trained {self.grid}x{self.grid} patch grid to "
                f"{grid}x{grid} (bicubic in float32, offset {self.interpolate_offset}, "
                f"antialias {'on' if self.interpolate_antialias else 'off'}: the official "
                "Web-DINO rule)")
        if self.outside_reference(resolution):
            text += "; outside the reference: the official Web-MAE code accepts 224 only"
        return text

    def outside_reference(self, resolution: int) -> bool:
        """Web-MAE's official code runs at its trained size only (Web-DINO's interpolates)."""
        return self.family == "mae" and resolution // self.patch_size != self.grid

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
        for k in required[1:]:
            v = data[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"{origin}: {k} must be a positive integer, got {v!r}")
        d, depth, heads = data["embed_dim"], data["depth"], data["num_heads"]
        patch, img = data["patch_size"], data["img_size"]
        if d % heads:
            raise UsageError(f"{origin}: embed_dim {d} is not divisible by num_heads {heads}")
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
    def from_json_file(cls, path: str | Path, option: str = "--model-config") -> "ArchSpec":
        """Read a spec JSON file; every problem is a UsageError naming ``option`` and the file."""
        p = Path(path).expanduser()
        if p.is_dir():
            raise UsageError(f"{option} {p}: is a folder; give the JSON file (a spec like "
                             f"tests/fixtures/official/dino-tiny/spec.json)")
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"{option} {p}: file not found") from None
        except OSError as exc:
            raise UsageError(f"{option} {p}: cannot read the file "
                             f"({exc.strerror or type(exc).__name__})") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            hint = (" It looks like a checkpoint: pass weights with --weights, and the "
                    "architecture with --model NAME or --model-config SPEC.json."
                    if raw[:4] == b"PK\x03\x04" or raw[:1] == b"\x80" or p.suffix in (
                        ".pth", ".pt", ".safetensors", ".bin") else "")
            raise UsageError(f"{option} {p}: not a JSON text file (binary content).{hint}"
                             ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{option} {p}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise UsageError(f"{option} {p}: expected a JSON object with architecture fields "
                             f"(family, embed_dim, depth, num_heads, patch_size, img_size)")
        return cls.from_dict(data, origin=f"{option} {p}")

    def validate(self, origin: str = "model config") -> None:
        """Refuse values no network can have, naming ``origin`` (the file) and the field."""
        for name in ("embed_dim", "depth", "num_heads", "patch_size", "img_size", "ffn_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{origin}: {name} must be a positive integer, got {value!r}")
        if isinstance(self.block_chunks, bool) or not isinstance(self.block_chunks, int) \
                or self.block_chunks < 0:
            raise UsageError(f"{origin}: block_chunks must be an integer >= 0, got "
                             f"{self.block_chunks!r}")
        for name in ("ln_eps", "interpolate_offset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0 or (name == "ln_eps" and value == 0):
                what = "a positive number" if name == "ln_eps" else "a number >= 0"
                raise UsageError(f"{origin}: {name} must be {what}, got {value!r}")
        for name in ("layerscale", "qkv_bias", "mask_token", "interpolate_antialias"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{origin}: {name} must be true or false, got "
                                 f"{getattr(self, name)!r}")
        if self.embed_dim % self.num_heads:
            raise UsageError(f"{origin}: embed_dim {self.embed_dim} is not divisible by "
                             f"num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            raise UsageError(f"{origin}: img_size {self.img_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        if self.ffn not in ("swiglu", "gelu_mlp"):
            raise UsageError(f"{origin}: ffn must be 'swiglu' or 'gelu_mlp', got {self.ffn!r}")
