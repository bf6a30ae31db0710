"""Shared helpers for the end-to-end extraction tests (tiny fixture model, CPU)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from webssl_cli.config import (ExtractConfig, InputConfig, ModelConfig, OutputConfig,
                               PreprocessConfig, RuntimeConfig)

FIX = Path(__file__).parent / "fixtures" / "official" / "dino-tiny"
SPEC, WEIGHTS = FIX / "spec.json", FIX / "official.pth"
RES = 56


def config(inputs, out, *, features=("cls",), fmt="parquet", workers=2, batch=4,
           shard_size=10_000, out_dtype="float32", keep_json=False, s3=None, limit=None,
           image_column=None, overwrite=False) -> ExtractConfig:
    return ExtractConfig(
        input=InputConfig(tuple(str(i) for i in inputs), shard_size=shard_size,
                          keep_json=keep_json, s3_endpoint_url=s3, image_column=image_column),
        model=ModelConfig(model_config=str(SPEC), weights=str(WEIGHTS), device="cpu",
                          precision="fp32", resolution=RES),
        output=OutputConfig(str(out), tuple(features), fmt, out_dtype, overwrite=overwrite),
        runtime=RuntimeConfig(batch_size=batch, num_workers=workers, progress_every=1e9,
                              limit_units=limit),
    )


def cli_args(inputs, out, *extra: str) -> list[str]:
    """``webssl extract`` arguments (after the program name) for the fixture model on CPU."""
    args = ["extract", "--model-config", str(SPEC), "--weights", str(WEIGHTS),
            "--resolution", str(RES), "--device", "cpu", "--precision", "fp32",
            "--out-dtype", "float32", "--out", str(out), "--progress-every", "1000"]
    for i in inputs:
        args += ["--input", str(i)]
    return args + list(extra)


def direct_cls(images: list[bytes]) -> np.ndarray:
    """The model called directly on the same preprocessed tensors (the reference)."""
    from webssl_cli import create_model
    from webssl_cli.preprocess import load_sample, normalize
    pcfg = PreprocessConfig(RES)
    x = normalize(torch.stack([load_sample(b, pcfg) for b in images]), pcfg)
    model = create_model(SPEC, weights=WEIGHTS)
    with torch.inference_mode():
        return model.forward_features(x)["x_norm_clstoken"].numpy()
