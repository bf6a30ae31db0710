"""What a run of N images would cost: wall time at a measured speed and output size on disk."""
from __future__ import annotations

import math
from typing import Any

from ..model_step.features import Feature
from ..registry import ArchSpec

OUT_ITEMSIZE = {"float16": 2, "float32": 4}


def feature_bytes_per_image(spec: ArchSpec, resolution: int, features: tuple[Feature, ...],
                            out_dtype: str = "float16") -> dict[str, int]:
    """Bytes per image of each feature as written (before Parquet compression)."""
    tokens = spec.tokens(resolution)
    item = OUT_ITEMSIZE[out_dtype]
    return {f.name: item * math.prod(f.shape(spec.embed_dim, tokens)) for f in features}


def project(spec: ArchSpec, resolution: int, features: tuple[Feature, ...], images: int,
            images_per_s: float, out_dtype: str = "float16") -> dict[str, Any]:
    """Projected wall time (this device, model-bound) and feature bytes for ``images`` images."""
    per = feature_bytes_per_image(spec, resolution, features, out_dtype)
    per_image = sum(per.values())
    seconds = images / images_per_s if images_per_s > 0 else float("inf")
    return {"images": images, "wall_seconds": seconds, "wall_hours": seconds / 3600,
            "bytes_per_image": per_image, "bytes_per_feature": per,
            "output_bytes": per_image * images, "out_dtype": out_dtype,
            "features": [f.name for f in features]}


def human_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "n/a"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"
