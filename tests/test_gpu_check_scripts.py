"""The GPU check scripts run in a short device lease, so they must not fail there on a plain
Python error. Their --smoke mode runs every section on a tiny model on the CPU; these tests
run it as the device would (a real process) and read the table it leaves."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, f"benchmarks/{script}", "--smoke", "--out", str(out),
                           *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_gpu_check_smoke_runs_every_section_and_keeps_its_table(tmp_path: Path) -> None:
    out = tmp_path / "gpu.md"
    p = run_script("gpu_check.py", out, "--order", "e2e,hf,models,cosine,decode")
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    failed = [r["mode"] for r in rows if r["mode"].startswith("FAILED")]
    assert not failed, failed
    models = [r["model"] for r in rows]
    # sections ran in the order asked for, each leaving its rows
    assert models[:5] == ["dino300m-full2b-224 e2e extract"] * 3 + [
        f"dino300m cls: --decode gpu (--cpu-share {s}) vs cpu" for s in ("0.0", "auto")]
    assert models[5:8] == ["smoke vs transformers"] * 3
    assert models[8:10] == ["smoke", "smoke"]
    assert [m.split(" (")[1] for m in models[10:12]] == ["cls)", "patches)"]
    decode = [r["mode"] for r in rows[12:]]
    assert models[12:] == ["decode_on_gpu (device step alone)"] * 9
    assert [m.split(":")[0] for m in decode] == [
        f"{s}{w}" for s in ("same size 256x256 (crop only at 224)", "same size 512x384",
                            "mixed sizes") for w in (", per-image", ", batched", "")]
    e2e = [r for r in rows if r["model"].endswith("e2e extract")]
    assert [r["mode"].split(",")[0] for r in e2e[:2]] == [
        "decode cpu", "decode gpu (--cpu-share 0.0: workers decoded 0%)"]
    assert e2e[2]["mode"].startswith("decode gpu (--cpu-share auto: workers decoded ")
    assert all(r["images"] == 32 and r["exit"] == 0 and r["failed_samples"] == 0 for r in e2e)
    assert "decode thread busy" in e2e[1]["mode"] and "decode thread" not in e2e[0]["mode"]
    assert all("Bottleneck:" in r["summary"] for r in e2e)
    assert all("cos min 1.0000" in r["mode"] or "cos min 0.999" in r["mode"] for r in rows[3:5])
    text = out.read_text()
    assert text.count("\n| ") == len(rows) + 1 and "total " in text


def test_gpu_check_killed_mid_run_leaves_the_rows_it_measured(tmp_path: Path) -> None:
    """The lease can end mid-run: every row is on disk as soon as it is measured."""
    out = tmp_path / "gpu.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.Popen([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(out),
                          "--order", "cosine,e2e"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        for line in p.stdout:
            if line.startswith("section cosine"):
                break
        p.kill()
    finally:
        p.wait(timeout=60)
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["model"].split(" (")[1] for r in rows] == ["cls)", "patches)"]
    assert "cut short" in out.read_text() and "e2e extract" not in out.read_text()


def test_gpu_bench_check_smoke_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    p = run_script("gpu_bench_check.py", out)
    assert p.returncode == 0, p.stderr[-3000:]
    text = out.read_text()
    assert "images/s" in text and "Traceback" not in text


def test_gpu_check_paths_section_reports_each_cuda_only_path(tmp_path: Path) -> None:
    out = tmp_path / "paths.md"
    p = run_script("gpu_check.py", out, "--order", "paths")
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert not [r for r in rows if "FAILED" in r["mode"]], rows
    names = [r["model"] for r in rows]
    assert names[:4] == [f"paths: --attention {b}" for b in ("flash", "efficient", "cudnn", "math")]
    assert "efficient" in names[1] and "float32 refused" in rows[1]["mode"]   # none on a CPU
    corrupt = rows[4]["mode"]
    assert "failures [8] (CorruptImage)" in corrupt and "fallbacks 1" in corrupt
    assert corrupt.endswith("without it: True")
    loader = rows[5]["mode"]
    assert "8 rows" in loader and "pin thread alive after close: False" in loader
    assert names[6].startswith("paths: NaN/inf check")
