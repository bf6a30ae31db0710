"""The native backbone reproduces the official Web-SSL code (fixtures) from every format."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from webssl_cli import create_model

FIX = Path(__file__).parent / "fixtures" / "official"
DINO, MAE = FIX / "dino-tiny", FIX / "mae-tiny-p16"
TOL = 1e-4


def official_dino(hw: str, **kw):
    """The tiny Web-DINO fixture with its official weights, and its ``input_{hw}`` array."""
    model = create_model(DINO / "spec.json", weights=DINO / "official.pth", **kw)
    return model, torch.from_numpy(np.load(DINO / f"input_{hw}.npy"))


def _maxdiff(a: torch.Tensor, expected_file: Path) -> float:
    return float(np.abs(a.detach().float().numpy() - np.load(expected_file)).max())


@pytest.mark.parametrize("fmt", ["official.pth", "teacher.pth", "hf"])
@pytest.mark.parametrize("hw", ["56x56", "84x70"])
def test_dino_fixture_all_outputs(fmt: str, hw: str) -> None:
    model = create_model(DINO / "spec.json", weights=DINO / fmt)
    x = torch.from_numpy(np.load(DINO / f"input_{hw}.npy"))
    with torch.inference_mode():
        out = model.forward_features(x)
        inter = model.get_intermediate_layers(x, n=2, return_class_token=True, norm=True)
    assert _maxdiff(out["x_norm_clstoken"], DINO / f"expected_{hw}_cls.npy") <= TOL
    assert _maxdiff(out["x_norm_patchtokens"], DINO / f"expected_{hw}_patch.npy") <= TOL
    assert _maxdiff(out["x_prenorm"], DINO / f"expected_{hw}_prenorm.npy") <= TOL
    patches = torch.stack([p for p, _ in inter])
    cls = torch.stack([c for _, c in inter])
    assert _maxdiff(patches, DINO / f"expected_{hw}_last2_patch.npy") <= TOL
    assert _maxdiff(cls, DINO / f"expected_{hw}_last2_cls.npy") <= TOL


def test_intermediate_layers_reshape_and_indices() -> None:
    model, x = official_dino("84x70")
    with torch.inference_mode():
        grid = model.get_intermediate_layers(x, n=[7, 8], reshape=True)
    assert grid[0].shape == (2, 64, 6, 5)
    expected = np.load(DINO / "expected_84x70_last2_patch.npy")[1]       # block 8
    got = grid[1].permute(0, 2, 3, 1).reshape(2, 30, 64).numpy()
    assert np.abs(got - expected).max() <= TOL


@pytest.mark.parametrize("fmt", ["official.pth", "hf"])
def test_mae_fixture_tokens(fmt: str) -> None:
    model = create_model(MAE / "spec.json", weights=MAE / fmt)
    x = torch.from_numpy(np.load(MAE / "input_64x64.npy"))
    with torch.inference_mode():
        out = model.forward_features(x)
    tokens = torch.cat([out["x_norm_clstoken"][:, None], out["x_norm_patchtokens"]], dim=1)
    assert _maxdiff(tokens, MAE / "expected_64x64_tokens.npy") <= TOL


@pytest.mark.parametrize("folder,cls_name,hw", [(DINO, "Dinov2Model", "56x56"),
                                                  (MAE, "ViTModel", "64x64")])
def test_against_transformers(folder: Path, cls_name: str, hw: str) -> None:
    """Our model vs transformers' own class loaded from the same HF folder, native size."""
    transformers = pytest.importorskip("transformers")
    kwargs = {"add_pooling_layer": False} if cls_name == "ViTModel" else {}
    ref = getattr(transformers, cls_name).from_pretrained(str(folder / "hf"), **kwargs).eval()
    ours = create_model(folder / "spec.json", weights=folder / "hf")
    x = torch.from_numpy(np.load(folder / f"input_{hw}.npy"))
    with torch.inference_mode():
        theirs = ref(pixel_values=x).last_hidden_state
        mine = ours.forward_features(x)
    assert float((theirs[:, 0] - mine["x_norm_clstoken"]).abs().max()) <= TOL
    assert float((theirs[:, 1:] - mine["x_norm_patchtokens"]).abs().max()) <= TOL


@pytest.mark.parametrize("hw", ["56x56", "84x70"])
def test_bf16_autocast_close_to_fp32(hw: str) -> None:
    model, x = official_dino(hw)
    with torch.inference_mode():
        ref = model.forward_features(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.forward_features(x)
    for key in ("x_norm_clstoken", "x_norm_patchtokens"):
        a, b = ref[key].float().flatten(0, -2), low[key].float().flatten(0, -2)
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        assert float(cos.min()) >= 0.999, key


def test_bf16_held_weights_match_autocast() -> None:
    """dtype=bf16 holds matmul weights in bf16 and keeps norms fp32: same as autocast."""
    fp32 = create_model(DINO / "spec.json", weights=DINO / "official.pth")
    held = create_model(DINO / "spec.json", weights=DINO / "official.pth", dtype=torch.bfloat16)
    assert held.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert held.blocks[0].norm1.weight.dtype == torch.float32
    x = torch.from_numpy(np.load(DINO / "input_56x56.npy"))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        a = fp32.forward_features(x)["x_norm_clstoken"].float()
        b = held.forward_features(x)["x_norm_clstoken"].float()
    assert torch.allclose(a, b, atol=1e-2)
    assert float(torch.nn.functional.cosine_similarity(a, b).min()) >= 0.9999


def test_input_size_not_multiple_of_patch_is_clear_error() -> None:
    from webssl_cli.errors import UsageError
    model = create_model(DINO / "spec.json", weights=DINO / "official.pth")
    with pytest.raises(UsageError, match="not a multiple of the patch size 14"):
        model.forward_features(torch.zeros(1, 3, 60, 56))


def test_custom_spec_needs_weights_or_explicit_random() -> None:
    from webssl_cli.errors import UsageError
    with pytest.raises(UsageError, match="needs weights"):
        create_model(DINO / "spec.json")
    m = create_model(DINO / "spec.json", random_init=True)
    assert torch.isfinite(m(torch.zeros(1, 3, 56, 56))).all()


def test_xformers_backend_fails_clearly_when_unavailable() -> None:
    from webssl_cli.errors import UsageError
    try:
        import xformers.ops  # noqa: F401
        pytest.skip("xformers loads here")
    except Exception:
        pass
    with pytest.raises(UsageError, match="xformers cannot be loaded"):
        create_model(DINO / "spec.json", weights=DINO / "official.pth", attention="xformers")


@pytest.mark.parametrize("command", ["extract", "bench"])
def test_a_forced_attention_kernel_that_cannot_run_here_is_refused_up_front(tmp_path, command):
    """torch has no efficient/cuDNN SDPA kernel on a CPU (and on CUDA none in float32 for
    flash/cuDNN): every batch would fail with a traceback. One tiny attention call at start
    says so, exit 2, before anything is written to the output folder (a name that is no
    kernel too); a kernel that can run is accepted."""
    from tests.helpers.cli import cli_here
    out = tmp_path / "o"
    model = ["--model-config", str(DINO / "spec.json"), "--resolution", "56", "--device", "cpu"]
    args = (["extract", *model, "--weights", str(DINO / "official.pth"), "--input",
             str(Path(__file__).resolve().parents[1] / "examples" / "images"), "--out", str(out),
             "--num-workers", "0"] if command == "extract"
            else ["bench", *model, "--iters", "1", "--warmup", "0", "--batch-size", "2"])
    for backend in ("efficient", "cudnn", "fast"):
        r = cli_here([*args, "--attention", backend, "--precision", "fp32"])
        assert r.returncode == 2, r.stderr
        assert (f"--attention {backend} cannot run on cpu with float32" in r.stderr
                if backend != "fast" else "--attention must be one of auto, flash" in r.stderr)
        assert "Traceback" not in r.stderr and not out.exists()
    r = cli_here([*args, "--attention", "flash", "--precision", "fp32"])
    assert r.returncode == 0, r.stderr
