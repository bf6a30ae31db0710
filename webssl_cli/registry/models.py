"""The model registry: one record per released Web-SSL checkpoint. Pure data.

Facts follow ``shared/MODELS.md`` (checked against facebookresearch/webssl @ c85b60b).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .spec import ArchSpec

LICENSE = "CC-BY-NC 4.0"
PTH_BASE_URL_DEFAULT = "https://dl.fbaipublicfiles.com/webssl"

DATA = {
    "full2b": "MC-2B (web images, unfiltered), 2B samples seen",
    "light2b": "MC-2B light filter (images with text, ~50%), 2B samples seen",
    "heavy2b": "MC-2B heavy filter (charts/documents, ~1.3%), 2B samples seen",
    "full8b": "MC-2B (web images, unfiltered), 8B samples seen",
    "in1k": "ImageNet-1k (ablation)",
}


@dataclass(frozen=True)
class Preprocess:
    """Default preprocessing (the official README recipe) for a model's resolution."""

    resolution: int
    mode: str = "resize-crop"       # resize-crop | squash | shortest-crop
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"

    @property
    def resize_short(self) -> int:
        return round(self.resolution / 0.875)


@dataclass(frozen=True)
class ModelRecord:
    name: str                    # short name, e.g. dino2b-full2b-224
    arch: ArchSpec
    data: str
    hf_repo: str | None
    pth_file: str | None         # file name under the official base URL
    teacher_file: str | None
    params: int                  # as listed in MODELS.md (checked by the tests)
    license: str = LICENSE
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def family(self) -> str:
        return self.arch.family

    @property
    def full_name(self) -> str:
        return f"webssl-{self.name}"

    @property
    def resolution(self) -> int:
        return self.arch.img_size

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(resolution=self.arch.img_size)

    def pth_url(self, base: str | None = None) -> str | None:
        if not self.pth_file:
            return None
        base = base or os.environ.get("WEBSSL_PTH_BASE_URL") or PTH_BASE_URL_DEFAULT
        return f"{base.rstrip('/')}/{self.pth_file}"

    def teacher_url(self, base: str | None = None) -> str | None:
        if not self.teacher_file:
            return None
        base = base or os.environ.get("WEBSSL_PTH_BASE_URL") or PTH_BASE_URL_DEFAULT
        return f"{base.rstrip('/')}/{self.teacher_file}"


def _dino(size: str, data: str, d: int, depth: int, heads: int, params: int, res: int = 224,
          hf: bool = True, pth: bool = True, notes: tuple[str, ...] = ()) -> ModelRecord:
    name = f"dino{size}-{data}-{res}"
    stem = f"webssl_{name.replace('-', '_')}"
    return ModelRecord(
        name=name, arch=ArchSpec.dino(d, depth, heads, img_size=res), data=DATA[data],
        hf_repo=f"facebook/webssl-{name}" if hf else None,
        pth_file=f"{stem}.pth" if pth else None,
        teacher_file=f"{stem}_ssl_teacher.pth" if pth else None,
        params=params, notes=notes)


def _mae(size: str, d: int, depth: int, heads: int, patch: int, params: int) -> ModelRecord:
    name = f"mae{size}-full2b-224"
    return ModelRecord(
        name=name, arch=ArchSpec.mae(d, depth, heads, patch_size=patch), data=DATA["full2b"],
        hf_repo=f"facebook/webssl-{name}", pth_file=f"webssl_{name.replace('-', '_')}.pth",
        teacher_file=None, params=params)


MODELS: tuple[ModelRecord, ...] = (
    _dino("300m", "full2b", 1024, 24, 16, 303_655_168),
    _dino("300m", "light2b", 1024, 24, 16, 303_655_168, pth=False,
          notes=("HF only; architecture assumed equal to dino300m-full2b-224 "
                 "(config.json is checked on load)",)),
    _dino("1b", "full2b", 1536, 40, 24, 1_134_771_200),
    _dino("2b", "full2b", 2688, 24, 21, 2_084_237_568),
    _dino("2b", "light2b", 2688, 24, 21, 2_084_237_568),
    _dino("2b", "heavy2b", 2688, 24, 21, 2_084_237_568),
    _dino("3b", "full2b", 3072, 26, 24, 2_948_317_184),
    _dino("3b", "light2b", 3072, 26, 24, 2_948_317_184),
    _dino("3b", "heavy2b", 3072, 26, 24, 2_948_317_184),
    _dino("5b", "full2b", 3584, 32, 28, 4_938_338_816),
    _dino("7b", "full8b", 4096, 32, 32, 6_450_170_880),
    _dino("7b", "full8b", 4096, 32, 32, 6_452_108_288, res=378),
    _dino("7b", "full8b", 4096, 32, 32, 6_454_729_728, res=518),
    _dino("1b", "in1k", 1536, 40, 24, 1_134_771_200, hf=False),
    _dino("2b", "in1k", 2688, 24, 21, 2_084_237_568, hf=False),
    _dino("3b", "in1k", 3072, 26, 24, 2_948_317_184, hf=False),
    _mae("300m", 1024, 24, 16, 16, 303_301_632),
    _mae("700m", 1280, 32, 16, 14, 630_764_800),
    _mae("1b", 1536, 40, 24, 14, 1_134_564_864),
    _mae("2b", 2688, 24, 21, 14, 2_084_019_840),
    _mae("3b", 3072, 26, 24, 14, 2_948_047_872),
)

BY_NAME: dict[str, ModelRecord] = {m.name: m for m in MODELS}
