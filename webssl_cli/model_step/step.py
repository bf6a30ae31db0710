"""The model step: a pure function from a uint8 image batch to a dict of feature tensors.

It knows nothing of files. Normalization (mean/std) happens on the model's device; the
forward runs under ``torch.inference_mode`` and autocast for half precisions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import UsageError
from .features import Feature, compute, layers_needed

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
OUT_DTYPES = {"float16": torch.float16, "float32": torch.float32}
NONFINITE = "__nonfinite__"    # the entry nonfinite_rows() adds next to the features


def nonfinite_rows(feats: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, F) bool, on the features' device: row b has a NaN or inf in the f-th feature (in
    ``feats`` order). Computed where the features are, so that a GPU run does not scan them
    again on the host; a few elementwise kernels per batch."""
    return torch.stack([~torch.isfinite(v.reshape(v.shape[0], -1)).all(dim=1)
                        for v in feats.values()], dim=1)


_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def pick_device(device: str | None) -> torch.device:
    if device:
        if not _DEVICE.match(device.strip()):
            raise UsageError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
        d = torch.device(device.strip())
        if d.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine; "
                             "use --device cpu")
        if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return d
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_precision(precision: str | None, device: torch.device) -> str:
    if precision is None:
        if device.type == "cuda":
            return "bf16"
        return "bf16" if _cpu_bf16_ok() else "fp32"
    if precision not in DTYPES:
        raise UsageError(f"--precision must be one of bf16, fp16, fp32; got {precision!r}")
    return precision


def _cpu_bf16_ok() -> bool:
    """bf16 autocast on a CPU only where it has native bf16 matmul (AVX512-BF16 / AMX):
    on plain AVX2 a ViT-L runs about 6x slower in bf16 than in fp32 (measured here)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


@dataclass
class ModelStep:
    model: torch.nn.Module
    features: tuple[Feature, ...]
    device: torch.device
    precision: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    normalize: bool = False
    out_dtype: str = "float16"
    pad_to: int | None = None     # pad smaller batches to this size (no recompiles with --compile)

    def __post_init__(self) -> None:
        from ..config import PreprocessConfig
        self._norm_cfg = PreprocessConfig(resolution=0, mean=self.mean, std=self.std)
        self._k = layers_needed(self.features)
        self._out = OUT_DTYPES[self.out_dtype]

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B,3,H,W) on any device -> normalized float32 on the model's device."""
        from ..preprocess import normalize
        return normalize(images.to(self.device, non_blocking=True), self._norm_cfg)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of one batch, on the model's device, in the output dtype."""
        n = images.shape[0]
        if self.pad_to and n < self.pad_to:
            images = torch.cat([images, images.new_zeros((self.pad_to - n, *images.shape[1:]))])
        x = self.to_input(images)
        grid = (x.shape[-2] // self.model.patch_size, x.shape[-1] // self.model.patch_size)
        dtype = DTYPES[self.precision]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            last = self.model.get_intermediate_layers(x, n=self._k, return_class_token=True,
                                                      norm=True)
            feats = compute(self.features, list(last), grid, self.normalize)
        return {k: v[:n].to(self._out) for k, v in feats.items()}
