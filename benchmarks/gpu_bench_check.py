"""GPU check of `webssl bench` and `--batch-size auto`: one script, one device call.

    PYTHONPATH=. python benchmarks/gpu_bench_check.py --out results.md     # ~4 min on an H100/H200
    PYTHONPATH=. python benchmarks/gpu_bench_check.py --smoke --out /tmp/x.md   # tiny, CPU

Checks, on the real device: the measured bf16 matmul peak (vs the datasheet KNOWN_PEAKS),
``bench_model`` for several models (auto batch, eager and compiled), ``find_batch_size``
against real CUDA OOMs (dino300m at 518 px with the math attention kernel, whose N x N
scores make memory, not compute, the limit), ``OOMBackoff`` recovering from a real OOM at run
time, ``bench_input`` with CPU and GPU decoding, and the CLI table. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from webssl_cli.bench import BenchConfig, bench_input, bench_model, match_peak
from webssl_cli.model_step.autobatch import OOMBackoff, find_batch_size, step_probe

TINY = "tests/fixtures/official/dino-tiny/spec.json"
LINES: list[str] = []


def say(msg: str) -> None:
    print(msg, flush=True)
    LINES.append(msg)


def matmul_peak(device: torch.device, n: int = 8192, iters: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        a @ b
    e.record()
    torch.cuda.synchronize()
    return 2 * n ** 3 * iters / (s.elapsed_time(e) / 1e3) / 1e12


def row(r) -> str:
    mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "n/a"
    return (f"| {r.model} | {r.resolution} | {r.precision}{' compiled' if r.compile else ''} | "
            f"{r.batch_size} | {r.images_per_s:.1f} | {r.tflops:.1f} | {mfu} | "
            f"{r.peak_mem_bytes / 2**30:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu-bench.md")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    smoke = args.smoke
    dev = torch.device("cpu" if smoke else "cuda")
    t_all = time.perf_counter()
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    say(f"# webssl bench GPU check on {name}, torch {torch.__version__}")
    results: dict = {"device": name}
    if dev.type == "cuda":
        peak = matmul_peak(dev)
        hit = match_peak(name)
        say(f"- measured bf16 matmul 8192^3: {peak:.0f} TFLOP/s; datasheet (KNOWN_PEAKS "
            f"{hit[0] if hit else '?'}): {hit[1] if hit else '?'} TFLOP/s")
        results["matmul_tflops"] = peak

    say("\n| model | res | precision | batch | img/s | TFLOP/s | MFU (datasheet) | peak GiB |")
    say("|---|---|---|---|---|---|---|---|")
    configs = ([BenchConfig(None, model_config=TINY, batch_size="auto", iters=2, warmup=1, device="cpu"),
                BenchConfig(None, model_config=TINY, batch_size=4, iters=2, warmup=1, device="cpu",
                            compile=True)] if smoke else
               [BenchConfig("dino300m-full2b-224", batch_size="auto", iters=5, warmup=2),
                BenchConfig("mae300m-full2b-224", batch_size=512, iters=5, warmup=2),
                BenchConfig("dino1b-full2b-224", batch_size=256, iters=5, warmup=2),
                BenchConfig("dino1b-full2b-224", batch_size=256, iters=5, warmup=2, compile=True),
                BenchConfig("dino7b-full8b-224", batch_size=128, iters=4, warmup=1,
                            features=("cls", "patches"), images=1_000_000)])
    results["bench"] = []
    for cfg in configs:
        t0 = time.perf_counter()
        try:
            r = bench_model(cfg)
        except Exception as exc:  # noqa: BLE001 - report and go on
            say(f"| {cfg.model or cfg.model_config} | FAILED {type(exc).__name__}: {exc} |")
            continue
        say(row(r) + f" <!-- {time.perf_counter() - t0:.0f}s -->")
        results["bench"].append(r.to_dict())
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # find_batch_size against real OOMs, then OOMBackoff at run time
    from webssl_cli.backbone.factory import create_model
    from webssl_cli.model_step import ModelStep, parse_features
    mname, res, attn = (TINY, 56, "math") if smoke else ("dino300m-full2b-224", 518, "math")
    model = create_model(mname, random_init=True, device=dev,
                         dtype=torch.bfloat16 if dev.type == "cuda" else None, attention=attn)
    grid = res // model.patch_size
    step = ModelStep(model, parse_features("cls", model.spec.depth, (grid, grid)), dev,
                     "bf16" if dev.type == "cuda" else "fp32", (0.485, 0.456, 0.406),
                     (0.229, 0.224, 0.225))
    probe = step_probe(step, res, dev)
    log: list[tuple[int, str, float]] = []

    def logged(n: int) -> None:
        t0 = time.perf_counter()
        try:
            probe(n)
        except Exception as exc:
            log.append((n, type(exc).__name__, time.perf_counter() - t0))
            raise
        log.append((n, "fit", time.perf_counter() - t0))

    t0 = time.perf_counter()
    bs = find_batch_size(logged, limit=64 if smoke else 4096)
    say(f"\n- find_batch_size, {mname} at {res}px, attention {attn}: {bs} "
        f"({time.perf_counter() - t0:.1f}s); tries: " + ", ".join(f"{n}:{k}" for n, k, _ in log))
    results["autobatch"] = {"batch": bs, "tries": log}
    if dev.type == "cuda":
        say(f"  memory after search: allocated {torch.cuda.memory_allocated() / 2**30:.1f} GiB, "
            f"reserved {torch.cuda.memory_reserved() / 2**30:.1f} GiB")
    big = 4 * bs if smoke else 2 * max(n for n, k, _ in log if k == "fit") + 64
    images = torch.randint(0, 256, (big, 3, res, res), dtype=torch.uint8, device=dev)
    sizes: list[tuple[int, int]] = []
    back = OOMBackoff(big, on_backoff=lambda a, b: sizes.append((a, b)))
    if smoke:   # no real OOM on a CPU: fail above bs like the GPU would

        def limited(x):
            if len(x) > bs:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (smoke)")
            return step(x)
        fn = limited
    else:
        fn = step
    t0 = time.perf_counter()
    try:
        out = back(fn, images)
        ok = out["cls"].shape[0] == big
        say(f"- OOMBackoff: batch of {big} -> sub-batches of {back.batch_size} after "
            f"{back.backoffs} OOM(s) {sizes}; rows ok: {ok}; {time.perf_counter() - t0:.1f}s")
        results["backoff"] = {"batch": big, "final": back.batch_size, "backoffs": back.backoffs}
    except Exception as exc:  # noqa: BLE001
        say(f"- OOMBackoff FAILED: {type(exc).__name__}: {exc}")
    del images, model, step
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    # input pipeline alone
    from benchmarks.bench_util import make_jpegs
    with tempfile.TemporaryDirectory() as d:
        n_img = 16 if smoke else 768
        make_jpegs(Path(d) / "jpegs", n_img)
        workers = 1 if smoke else max(1, (os.cpu_count() or 2) - 2)
        for decode in (("cpu",) if smoke else ("cpu", "gpu")):
            r = bench_input(str(Path(d) / "jpegs"), workers, 224, decode, seconds=8, batch_size=64)
            say(f"- bench_input decode {decode}, {workers} workers: {r['images_per_s']:.0f} img/s "
                f"({r['images']} images, {r['failures']} failed, start-up {r['startup_seconds']:.1f}s)")
            results[f"input_{decode}"] = r
    cli = [sys.executable, "-m", "webssl_cli", "bench"] + (
        ["--model-config", TINY, "--device", "cpu", "--iters", "1", "--warmup", "0"] if smoke else
        ["--model", "dino300m-full2b-224", "--batch-size", "512", "--iters", "5",
         "--features", "cls,patches", "--images", "10000000"])
    p = subprocess.run(cli, capture_output=True, text=True)
    say("\n```\n$ webssl " + " ".join(cli[3:]) + "\n" + p.stdout + p.stderr[-2000:] + "```")
    say(f"\ntotal {time.perf_counter() - t_all:.0f}s")
    Path(args.out).write_text("\n".join(LINES) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
