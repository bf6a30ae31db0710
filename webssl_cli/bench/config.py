"""Typed configuration and result of `webssl bench` (model speed on synthetic input)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class BenchConfig:
    model: str | None                    # registry name; None when model_config is given
    batch_size: int | str = "auto"       # int or "auto" (largest that fits, with headroom)
    resolution: int | None = None        # default: the model's training resolution
    precision: str | None = None         # bf16 | fp16 | fp32 (default bf16 on CUDA)
    compile: bool = False
    device: str | None = None            # default: cuda if available else cpu
    attention: str = "auto"
    warmup: int = 3
    iters: int = 10
    peak_tflops: float | None = None     # default: KNOWN_PEAKS for the GPU (bf16/fp16 only)
    features: tuple[str, ...] = ("cls",)
    images: int | None = None            # project wall time + output size for this many images
    model_config: str | None = None      # JSON architecture instead of a registry name
    out_dtype: str = "float16"           # output dtype assumed by the projection
    pad_ffn: bool | None = None          # as ModelConfig.pad_ffn (None: on CUDA only)


@dataclass
class BenchResult:
    model: str
    device_name: str
    batch_size: int
    images_per_s: float
    ms_per_image: float
    tflops: float                        # achieved, from the closed-form FLOPs per image
    mfu: float | None                    # tflops / peak (None without a peak)
    peak_mem_bytes: int
    compile: bool
    precision: str
    resolution: int
    projection: dict[str, Any] | None = None
    device: str = "cpu"
    peak_tflops: float | None = None
    peak_source: str | None = None       # "given" | "datasheet <key>" | None
    peak_mem_kind: str = ""              # what peak_mem_bytes measures
    gflops_per_image: float = 0.0
    iters: int = 0
    seconds: float = 0.0                 # timed wall seconds (all iters)
    features: tuple[str, ...] = ()
    attention: str = "auto"
    padded_ffn_hidden: int = 0           # SwiGLU hidden size run (--pad-ffn), 0: not padded

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = list(self.features)
        return d
