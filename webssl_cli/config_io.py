"""ExtractConfig <-> JSON, so that `--gpus` children receive exactly the parent's config."""
from __future__ import annotations

import dataclasses
import json

from .config import ExtractConfig, InputConfig, ModelConfig, OutputConfig, RuntimeConfig


def config_to_json(cfg: ExtractConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg))


def config_from_json(text: str) -> ExtractConfig:
    d = json.loads(text)
    tup = lambda x: tuple(x) if isinstance(x, list) else x  # noqa: E731
    return ExtractConfig(
        input=InputConfig(**{k: tup(v) for k, v in d["input"].items()}),
        model=ModelConfig(**d["model"]),
        output=OutputConfig(**{k: tup(v) for k, v in d["output"].items()}),
        runtime=RuntimeConfig(**d["runtime"]),
        preprocess_mode=d["preprocess_mode"],
        max_image_pixels=d["max_image_pixels"],
        jpeg_draft=d.get("jpeg_draft", False),
    )
