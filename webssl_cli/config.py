"""Typed configuration of an extraction run, one dataclass per stage.

The CLI fills these; the Python API takes them directly. Nothing else passes kwargs dicts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

PREPROCESS_MODES = ("resize-crop", "squash", "shortest-crop")


@dataclass(frozen=True)
class InputConfig:
    inputs: tuple[str, ...]
    shard_size: int = 10_000            # samples per unit for folders / lists / parquet
    image_key: str | None = None        # webdataset: which extension holds the image
    image_column: str | None = None     # parquet: which column holds the image bytes
    key_column: str | None = None       # parquet: optional column with sample keys
    keep_json: bool = False             # webdataset: copy sidecar json fields
    s3_endpoint_url: str | None = None  # also WEBSSL_S3_ENDPOINT_URL / AWS_ENDPOINT_URL

    def __post_init__(self) -> None:
        # one path given alone (a str or a Path) is one input, not a sequence of letters
        one = isinstance(self.inputs, (str, os.PathLike))
        items = (self.inputs,) if one else tuple(self.inputs)
        object.__setattr__(self, "inputs", tuple(_path_str(i) for i in items))


@dataclass(frozen=True)
class PreprocessConfig:
    resolution: int                     # S: output side, a multiple of the patch size
    mode: str = "resize-crop"           # resize-crop (README) | squash (demo) | shortest-crop (HF)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_image_pixels: int = 178_956_970  # decompression-bomb limit (PIL's default x2)
    jpeg_draft: bool = False            # decode big JPEGs at 1/2..1/8 scale (libjpeg DCT scaling)

    @property
    def resize_short(self) -> int:
        """Shorter side before the center crop."""
        if self.mode == "resize-crop":
            return round(self.resolution / 0.875)
        return self.resolution


@dataclass(frozen=True)
class ModelConfig:
    model: str | None = None            # registry name (short, full, HF or .pth style)
    model_config: str | None = None     # path to a JSON architecture (instead of a name)
    weights: str | None = None          # explicit checkpoint file or HF dir: never downloads
    source: str | None = None           # hf | pth (download source)
    cache_dir: str | None = None
    offline: bool = False
    device: str | None = None           # default: cuda if available else cpu
    precision: str | None = None        # bf16 | fp16 | fp32 (default bf16 on cuda)
    attention: str = "auto"             # auto | flash | efficient | cudnn | math | xformers
    compile: bool = False
    resolution: int | None = None       # override the model's training resolution
    pad_ffn: bool | None = None         # zero-pad SwiGLU hidden to x256; None: on CUDA only

    def __post_init__(self) -> None:
        for name in ("model_config", "weights", "cache_dir"):
            object.__setattr__(self, name, _path_str(getattr(self, name)))


@dataclass(frozen=True)
class OutputConfig:
    out_dir: str
    features: tuple[str, ...] = ("cls",)
    format: str = "parquet"             # parquet | npy
    out_dtype: str = "float16"          # float16 | float32
    normalize: bool = False
    overwrite: bool = False
    manifest_name: str = "_webssl"

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", _path_str(self.out_dir))


@dataclass(frozen=True)
class RuntimeConfig:
    batch_size: int | str = 64          # int or "auto"
    num_workers: int = 4
    prefetch_factor: int = 4
    progress_every: float = 30.0        # seconds between plain progress lines (no terminal)
    lease_seconds: float = 300.0        # claim lease before another rank may take a unit over
    heartbeat_seconds: float | None = None   # None: min(30 s, lease / 4)
    plan_wait_seconds: float = 600.0
    decode: str = "cpu"                 # cpu | gpu
    cpu_share: float | None = None      # --decode gpu: share of GPU-decodable JPEGs the
                                        # workers decode; None: balanced (decode_share)
    gpus: int = 0                       # --gpus N: spawn N local worker processes
    limit_units: int | None = None      # stop after this many units (testing, sampling)
    feature_memory_mib: int | None = None   # features held in memory before spilling to
                                            # disk; None: pipeline.spill.spill_budget

    @property
    def heartbeat(self) -> float:
        """Seconds between claim heartbeats: well inside the lease, so live claims never
        look stale to other ranks."""
        if self.heartbeat_seconds is not None:
            return self.heartbeat_seconds
        return min(30.0, self.lease_seconds / 4)


@dataclass(frozen=True)
class ExtractConfig:
    input: InputConfig
    model: ModelConfig
    output: OutputConfig
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    preprocess_mode: str = "resize-crop"
    max_image_pixels: int = 178_956_970  # decompression-bomb limit (declared width x height)
    jpeg_draft: bool = False             # --jpeg-draft (see PreprocessConfig.jpeg_draft)


def _path_str(value):   # noqa: ANN001, ANN202 - str, os.PathLike or None (or anything: checked later)
    """A ``pathlib.Path`` (any ``os.PathLike``) as the str the stages expect; else unchanged."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value
