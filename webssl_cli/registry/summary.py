"""One flat, JSON-able summary per model: what `list-models` and `info` show."""
from __future__ import annotations

from typing import Any

from .cost import feature_bytes, flops_per_image, param_count
from .models import ModelRecord


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def summarize(rec: ModelRecord, cached: dict[str, bool] | None = None,
              full: bool = False) -> dict[str, Any]:
    a = rec.arch
    fb = feature_bytes(a)
    row: dict[str, Any] = {
        "name": rec.name, "family": a.family, "params": param_count(a),
        "width": a.embed_dim, "depth": a.depth, "heads": a.num_heads, "patch": a.patch_size,
        "resolution": a.img_size, "tokens": a.tokens(),
        "gflops_per_image": round(flops_per_image(a) / 1e9, 1),
        "fp16_bytes_cls": fb["cls"], "fp16_bytes_patches": fb["patches"],
        "bf16_weight_bytes": 2 * param_count(a),
        "data": rec.data, "license": rec.license,
        "cached": cached or {},
    }
    if full:
        pre = rec.preprocess
        row.update({
            "full_name": rec.full_name, "hf_repo": rec.hf_repo, "pth_url": rec.pth_url(),
            "teacher_url": rec.teacher_url(), "architecture": a.to_dict(),
            "preprocessing": {
                "default": f"resize shorter side to {pre.resize_short} (bicubic, antialias), "
                           f"center crop {pre.resolution} (official README recipe)",
                "alternatives": {"squash": f"square resize to {pre.resolution} (official demo)",
                                 "shortest-crop": f"shorter side to {pre.resolution}, center crop "
                                                  f"{pre.resolution} (HF image processor)"},
                "mean": pre.mean, "std": pre.std,
            },
            "notes": list(rec.notes),
        })
    return row
