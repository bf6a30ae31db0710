"""The first `webssl extract` of a registry model downloads its weights (from a server on
127.0.0.1), later runs work offline from the cache; offline and missing is exit 2."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.cli import cli_here, run_cli
from tests.helpers.http_range_server import RangeServer
from webssl_cli import create_model, read_features

EXAMPLES = Path(__file__).parent.parent / "examples" / "images"
MODEL, FILE = "mae300m-full2b-224", "webssl_mae300m_full2b_224.pth"


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str | None]:
    """Environment changes: caches in tmp_path, servers on 127.0.0.1 (port 9: refused), every
    other HF_* / WEBSSL_* variable of this environment unset."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("HF_", "WEBSSL_"))}
    env.update({"WEBSSL_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf"),
                "HF_ENDPOINT": "http://127.0.0.1:9",
                "WEBSSL_PTH_BASE_URL": "http://127.0.0.1:9/webssl", **extra})
    return env


def extract_args(out: Path, *extra: str) -> list[str]:
    # 32 px = a 2x2 patch grid: real-size weights, tiny compute (interpolated pos-embed)
    return ["extract", "--model", MODEL, "--input", str(EXAMPLES), "--out", str(out),
            "--resolution", "32", "--device", "cpu", "--precision", "fp32", "--num-workers", "0",
            "--progress-every", "1000", *extra]


def test_offline_and_missing_is_exit_2_naming_model_and_command(tmp_path: Path) -> None:
    r = cli_here(extract_args(tmp_path / "out", "--offline", "--source", "pth"),
                 env=clean_env(tmp_path))
    assert r.returncode == 2, r.stderr
    assert MODEL in r.stderr and "not in the cache" in r.stderr
    assert f"webssl download {MODEL} --source pth" in r.stderr
    assert not (tmp_path / "out" / "_webssl" / "done").exists()


@pytest.fixture(scope="module")
def real_size_checkpoint() -> bytes:
    model = create_model(MODEL, random_init=True, dtype=torch.bfloat16, seed=3)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def test_first_extract_downloads_then_offline(real_size_checkpoint: bytes, tmp_path: Path) -> None:
    with RangeServer({FILE: real_size_checkpoint}) as srv:
        env = clean_env(tmp_path, WEBSSL_PTH_BASE_URL=f"http://127.0.0.1:{srv.port}/webssl")
        r = run_cli(extract_args(tmp_path / "a", "--source", "pth"), env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        cached = tmp_path / "cache" / FILE
        assert cached.read_bytes() == real_size_checkpoint
        assert len(srv.requests("GET")) == 1
    # server gone: the same model now runs from the cache, offline (in this process)
    r = cli_here(extract_args(tmp_path / "b", "--source", "pth", "--offline"),
                 env=clean_env(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    ka, a = read_features(tmp_path / "a")
    kb, b = read_features(tmp_path / "b")
    assert ka == kb == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    assert a.shape == (4, 1024) and np.array_equal(a, b)


@pytest.mark.parametrize("gpus", [0, 2])
def test_a_run_whose_weights_do_not_load_leaves_nothing_that_refuses_the_fix(tmp_path: Path,
                                                                             gpus: int) -> None:
    """Weights that are not a checkpoint (or do not fit) fail the run before its first unit:
    the settings it wrote are removed, so the corrected command starts instead of being
    refused for a weights checksum under which nothing was extracted (--gpus: the launcher
    wrote them, its workers failed)."""
    from tests.extract_helpers import WEIGHTS, cli_args
    out, bad = tmp_path / "out", tmp_path / "text.pth"
    bad.write_text("not weights\n")
    extra = ["--num-workers", "0"] + (["--gpus", str(gpus)] if gpus else [])
    args = cli_args([EXAMPLES], out, *extra)
    wrong = [str(bad) if a == str(WEIGHTS) else a for a in args]
    r = (run_cli if gpus else cli_here)(wrong)     # the workers' messages: a real stderr
    assert r.returncode in (1, 2) and "not a PyTorch checkpoint" in r.stderr, r.stderr[-2000:]
    assert not (out / "_webssl" / "run.json").exists()
    r = cli_here(args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(read_features(out)[0]) == 4
