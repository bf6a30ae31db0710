"""--pad-ffn: the SwiGLU hidden size zero-padded to an aligned size gives the same features
(official fixtures), keeps every parameter's dtype, and reaches extract and bench."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.extract_helpers import cli_args
from tests.helpers import images as img
from tests.helpers.cli import cli_here
from tests.test_backbone_fidelity import DINO, MAE, TOL, _maxdiff, official_dino
from webssl_cli import create_model, read_features
from webssl_cli.backbone.factory import pad_ffn, want_pad_ffn


@pytest.mark.parametrize("hw", ["56x56", "84x70"])
def test_padded_model_reproduces_the_official_outputs(hw: str) -> None:
    model, x = official_dino(hw)
    with torch.inference_mode():
        before = model.forward_features(x)
    assert pad_ffn(model) == 256                       # hidden 176 -> 256 (fixture spec)
    mlp = model.blocks[0].mlp
    assert (mlp.w12.out_features, mlp.w3.in_features) == (512, 256)
    with torch.inference_mode():
        after = model.forward_features(x)
        inter = model.get_intermediate_layers(x, n=2, return_class_token=True, norm=True)
    for key in ("x_norm_clstoken", "x_norm_patchtokens", "x_prenorm"):
        assert float((after[key] - before[key]).abs().max()) <= 1e-5
    assert _maxdiff(after["x_norm_clstoken"], DINO / f"expected_{hw}_cls.npy") <= TOL
    assert _maxdiff(torch.stack([p for p, _ in inter]),
                    DINO / f"expected_{hw}_last2_patch.npy") <= TOL
    assert pad_ffn(model) == 0                         # aligned now: nothing more to do


def test_padding_keeps_each_parameter_dtype_and_device() -> None:
    """A bf16-held model keeps bf16 matmul weights and its biases' own dtype after padding."""
    model = create_model(DINO / "spec.json", weights=DINO / "official.pth", dtype=torch.bfloat16)
    mlp = model.blocks[3].mlp
    dtypes = {n: p.dtype for n, p in mlp.named_parameters()}
    assert dtypes["w12.weight"] == torch.bfloat16
    pad_ffn(model, multiple=64)                        # 176 -> 192
    assert {n: p.dtype for n, p in mlp.named_parameters()} == dtypes
    assert all(not p.requires_grad and p.device.type == "cpu" for p in model.parameters())
    assert mlp.w3.in_features == 192


def test_mae_and_aligned_models_are_left_alone() -> None:
    mae = create_model(MAE / "spec.json", weights=MAE / "official.pth")
    shapes = {n: p.shape for n, p in mae.named_parameters()}
    assert pad_ffn(mae) == 0
    assert {n: p.shape for n, p in mae.named_parameters()} == shapes
    assert want_pad_ffn(None, torch.device("cpu")) is False
    assert want_pad_ffn(None, torch.device("cuda")) is True
    assert want_pad_ffn(True, torch.device("cpu")) is True


def test_extract_with_pad_ffn_matches_without(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(5):
        (root / f"p{i}.jpg").write_bytes(img.make_jpeg(90 + 7 * i, 70, i))
    runs = {}
    for flag in ("--pad-ffn", "--no-pad-ffn"):
        out = tmp_path / flag.strip("-")
        r = cli_here(cli_args([root], out, "--num-workers", "1", "--features", "cls,patches",
                              flag))
        assert r.returncode == 0, r.stderr
        runs[flag] = (read_features(out, "cls"), read_features(out, "patches"))
    (k1, c1), (_, p1) = runs["--pad-ffn"]
    (k2, c2), (_, p2) = runs["--no-pad-ffn"]
    assert k1 == k2 and len(k1) == 5
    assert np.abs(c1 - c2).max() <= 1e-5 and np.abs(p1 - p2).max() <= 1e-5


def test_bench_reports_the_padded_size() -> None:
    """The API result carries the padded size (0 without padding); the CLI table prints it."""
    from webssl_cli.bench import BenchConfig, bench_model
    cfg = BenchConfig(None, batch_size=2, device="cpu", warmup=0, iters=1,
                      model_config=str(DINO / "spec.json"))
    assert bench_model(dataclasses.replace(cfg, pad_ffn=True)).padded_ffn_hidden == 256
    assert bench_model(cfg).padded_ffn_hidden == 0
    r = cli_here(["bench", "--model-config", DINO / "spec.json", "--device", "cpu",
                  "--batch-size", "2", "--iters", "1", "--warmup", "0", "--pad-ffn"])
    assert r.returncode == 0, r.stderr
    assert "FFN padded to 256" in r.stdout
