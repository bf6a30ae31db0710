"""`webssl bench` through the real console script, and the projection / peak arithmetic."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import cli_here
from webssl_cli.bench import KNOWN_PEAKS, bench_input, human_seconds, peak_for, project
from webssl_cli.model_step import parse_features
from webssl_cli.registry import ArchSpec, feature_bytes, flops_per_image, resolve

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "official" / "dino-tiny" / "spec.json"


def run_module(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m webssl_cli ARGS`` as a real process."""
    return subprocess.run([sys.executable, "-m", "webssl_cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_bench_tiny_model_json_through_console_script():
    r = run_module("bench", "--model-config", str(TINY), "--device", "cpu", "--batch-size", "3",
                "--warmup", "1", "--iters", "2", "--features", "cls,patches,layers:2",
                "--images", "1000", "--peak-tflops", "2", "--precision", "fp32", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    spec = ArchSpec.from_json_file(TINY)
    assert out["batch_size"] == 3 and out["iters"] == 2 and out["resolution"] == 56
    assert out["precision"] == "fp32" and out["device"] == "cpu"
    assert out["images_per_s"] > 0
    assert out["ms_per_image"] == pytest.approx(1000 / out["images_per_s"])
    assert out["images_per_s"] == pytest.approx(6 / out["seconds"])
    assert out["gflops_per_image"] == pytest.approx(flops_per_image(spec, 56) / 1e9)
    assert out["tflops"] == pytest.approx(out["images_per_s"] * out["gflops_per_image"] / 1e3)
    assert out["mfu"] == pytest.approx(out["tflops"] / 2) and out["peak_source"] == "given"
    assert out["peak_mem_bytes"] > 0 and out["peak_mem_kind"] == "process peak RSS"
    p = out["projection"]
    fb = feature_bytes(spec, 56)   # fp16 bytes: 2*D and 2*D*T
    assert p["bytes_per_feature"] == {"cls": fb["cls"], "patches": fb["patches"],
                                      "layers:2": 2 * fb["cls"]}
    assert p["output_bytes"] == 1000 * (fb["cls"] * 3 + fb["patches"])
    assert p["wall_seconds"] == pytest.approx(1000 / out["images_per_s"])


def test_bench_table_and_cpu_auto_batch_without_peak():
    r = cli_here(["bench", "--model-config", TINY, "--device", "cpu", "--warmup", "0",
                  "--iters", "1", "--images", "5000"])
    assert r.returncode == 0, r.stderr
    assert "images/s" in r.stdout and "ms per image" in r.stdout
    assert "n/a (no known peak" in r.stdout        # CPU: no MFU without --peak-tflops
    assert "5,000 images: wall time" in r.stdout
    assert "│ batch size" in r.stdout and "│ 16 " in r.stdout   # auto on CPU: fixed default


@pytest.mark.parametrize("args, needle", [
    (["--model", "dino300m-full2b-224", "--model-config", str(TINY)], "not both"),
    (["--model-config", str(TINY), "--resolution", "57"], "not a multiple of the patch size"),
    (["--model", "dino9b-full2b-224"], "unknown model"),
    (["--model-config", str(TINY), "--batch-size", "lots"], "--batch-size"),
    (["--model-config", str(TINY), "--features", "bogus"], "unknown feature"),
    (["--model-config", str(TINY), "--iters", "0"], "--iters"),
    ([], "--model NAME"),
])
def test_bench_usage_errors_exit_2(args, needle):
    # In-process through the CLI entry point (the subprocess path is covered above).
    r = cli_here(["bench", "--device", "cpu", "--iters", "1", "--warmup", "0", *args])
    assert r.returncode == 2 and needle in r.stderr


def test_bench_input_counts_images_and_failures(tmp_path):
    src = ROOT / "examples" / "images"
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    jpgs = sorted(src.glob("*.jpg"))
    for i in range(3):
        for j in jpgs:
            (imgs / f"{i}_{j.name}").write_bytes(j.read_bytes())
    (imgs / "broken.jpg").write_bytes(jpgs[0].read_bytes()[:200])
    out = bench_input(str(imgs), workers=0, resolution=56, batch_size=4, seconds=60)
    assert out["images"] == 3 * len(jpgs)
    assert out["failures"] == 1
    assert out["images_per_s"] > 0 and out["units"] == 1
    r = cli_here(["bench", "--input", imgs, "--num-workers", "1", "--resolution", "56",
                  "--json", "--model-config", TINY, "--images", "100"])
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["images"] == 3 * len(jpgs) and rep["failures"] == 1 and rep["workers"] == 1
    fb = feature_bytes(ArchSpec.from_json_file(TINY), 56)
    assert rep["projection"]["output_bytes"] == 100 * fb["cls"]
    r = cli_here(["bench", "--input", imgs, "--num-workers", "0", "--resolution", "56",
                  "--jpeg-draft"])
    assert r.returncode == 0 and "+ --jpeg-draft" in r.stdout, r.stderr


def test_projection_matches_registry_numbers():
    rec = resolve("dino7b-full8b-518").record
    feats = parse_features("cls,patches,patch_grid:4", rec.arch.depth, (37, 37))
    p = project(rec.arch, 518, feats, images=1_000_000, images_per_s=250.0)
    fb = feature_bytes(rec.arch, 518)
    assert fb["patches"] == 2 * 4096 * 37 * 37        # 11.2 MB per image (MODELS.md)
    assert p["bytes_per_feature"] == {"cls": fb["cls"], "patches": fb["patches"],
                                      "patch_grid:4": 16 * fb["cls"]}
    assert p["output_bytes"] == 1_000_000 * (17 * fb["cls"] + fb["patches"])
    assert p["wall_seconds"] == pytest.approx(4000.0)
    p32 = project(rec.arch, 518, feats[:1], images=10, images_per_s=1.0, out_dtype="float32")
    assert p32["output_bytes"] == 10 * feature_bytes(rec.arch, 518, itemsize=4)["cls"]
    assert human_seconds(4000.0) == "66.7 min" and human_seconds(math.inf) == "n/a"


def test_known_peaks_match_most_specific_name():
    assert peak_for("NVIDIA H100 80GB HBM3", "bf16") == KNOWN_PEAKS["H100"]
    assert peak_for("NVIDIA H100 PCIe", "bf16") == KNOWN_PEAKS["H100 PCIe"]
    assert peak_for("NVIDIA L40S", "fp16") == KNOWN_PEAKS["L40S"]
    assert peak_for("NVIDIA L4", "bf16") == KNOWN_PEAKS["L4"]
    assert peak_for("NVIDIA H100 80GB HBM3", "fp32") is None     # no tensor-core fp32 peak
    assert peak_for("Some Future GPU", "bf16") is None
