"""`make bench`: every CPU benchmark, side by side in one run, written to a results file.

Runs each benchmark in a fresh interpreter (clean heap and peak-RSS counter), prints a table
of ratios against the goals and writes ``benchmarks/results/cpu-<date>.md`` (and ``.json``)
with the machine (nproc, CPU model, torch), the exact command and every number.

    .venv/bin/python -m benchmarks.run_cpu                 # what `make bench` runs (~10 min, 2 cores)
    .venv/bin/python -m benchmarks.run_cpu --quick --out /tmp/b   # small sizes, smoke test
    .venv/bin/python -m benchmarks.run_cpu --only decode,load

Benchmarks: decode (``decode_bench``: our decode+preprocess vs PIL + HF image processor, per
core), model (``model_vs_transformers``: native ViT-L vs Dinov2Model / ViTModel, fp32 and bf16),
pipeline (``pipeline_overhead``: extract vs model-only, and RSS for 1x / 10x images), load
(``load_memory``: peak RSS of loading a random dino1b checkpoint). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_util import ROOT, machine_info, run_isolated

FULL: dict[str, dict[str, Any]] = {
    "decode": {"n_images": 60, "repeats": 3},
    "model": {"batch": 2, "rounds": 3, "bf16_batch": 1, "bf16_rounds": 2},
    "pipeline": {"n_images": 16, "batch": 8, "workers": 1, "passes": 2, "flat_small": 40,
                 "flat_factor": 10},
    "load": {"model": "dino1b-full2b-224"},
}
QUICK: dict[str, dict[str, Any]] = {
    "decode": {"n_images": 12, "repeats": 1},
    "model": {"batch": 1, "rounds": 1, "bf16_batch": 1, "bf16_rounds": 0, "families": ["dino"]},
    "pipeline": {"n_images": 4, "batch": 4, "workers": 1, "passes": 1, "flat_small": 8,
                 "flat_factor": 3},
    "load": {"model": "dino300m-full2b-224"},
}
MODULES = {"decode": "decode_bench", "model": "model_vs_transformers",
           "pipeline": "pipeline_overhead", "load": "load_memory"}


def rows_from(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(measure, ours, reference, ratio, goal, met) rows for the summary table."""
    rows = []

    def add(measure, ours, ref, ratio, goal, met):
        rows.append((measure, ours, ref, f"{ratio:.2f}x" if ratio is not None else "-", goal,
                     "-" if met is None else ("yes" if met else "no")))

    d = results.get("decode")
    if d and "ratios" in d:
        r = d["images_per_s"]
        add("data path: decode+preprocess per core vs PIL + HF processor (PIL backend)",
            f"{r['ours']:.1f} img/s", f"{r['seed PIL+BitImageProcessorPil']:.1f} img/s",
            d["ratios"]["vs_pil_processor"], ">= 3", d["ratios"]["vs_pil_processor"] >= 3)
        add("data path: same vs HF processor (torchvision backend)", f"{r['ours']:.1f} img/s",
            f"{r['seed PIL+BitImageProcessor(torchvision)']:.1f} img/s",
            d["ratios"]["vs_torchvision_processor"], "(info)", None)
        jd = d.get("jpeg_draft")
        if jd:
            add(f"data path: --jpeg-draft vs exact on 1280x960..4000x3000 JPEGs (crops "
                f"{jd['psnr_db']:.1f} dB PSNR, mean |diff| {jd['mean_abs_diff']:.2f} levels)",
                f"{jd['images_per_s']['jpeg_draft']:.1f} img/s",
                f"{jd['images_per_s']['exact']:.1f} img/s", jd["ratio"], "(info)", None)
    p = results.get("pipeline")
    if p:
        o = p["overhead"]
        add(f"pipeline: extract img/s (worker start-up included) over model-only "
            f"({o['images']} images, batch {o['batch']}, {o['precision']})", f"{o['extract_images_per_s']:.3f} img/s",
            f"{o['model_only_images_per_s']:.3f} img/s", o["ratio"], ">= 0.9", o["ratio"] >= 0.9)
        m = p["memory"]
        big = next(k for k in m if k.endswith("x") and k != "1x")
        add(f"memory: extract peak RSS, main process, {big} vs 1x images",
            f"{m[big]['self_max_rss'] / 2**20:.0f} MiB", f"{m['1x']['self_max_rss'] / 2**20:.0f} MiB",
            m["ratio_main"], "flat (<= 1.05)", m["ratio_main"] <= 1.05)
        add(f"memory: extract peak RSS, largest worker, {big} vs 1x images",
            f"{m[big]['workers_max_rss'] / 2**20:.0f} MiB",
            f"{m['1x']['workers_max_rss'] / 2**20:.0f} MiB", m["ratio_workers"], "flat (<= 1.05)",
            m["ratio_workers"] <= 1.05)
    mv = results.get("model")
    if mv:
        for fam, res in mv["results"].items():
            for prec, run in res["runs"].items():
                add(f"model: {res['model']} native vs {res['hf_class']} ({prec}, batch {run['batch']})",
                    f"{run['ours_images_per_s']:.3f} img/s", f"{run['theirs_images_per_s']:.3f} img/s",
                    run["ratio"], ">= 1.2", run["ratio"] >= 1.2)
                if "ceiling" in run:
                    sh = run["shared_kernel_share"]
                    add(f"model: share of time in matmul + attention kernels ({prec}); ours / "
                        "theirs, and the most removing all else could gain",
                        f"{100 * sh['ours']:.1f}%", f"{100 * sh['theirs']:.1f}%",
                        run["ceiling"], "(bound)", None)
                if "ratio_ram" in run:
                    add(f"model: same, our weights copied from the file mapping into RAM ({prec})",
                        f"{run['ours_ram_images_per_s']:.3f} img/s",
                        f"{run['theirs_images_per_s']:.3f} img/s", run["ratio_ram"], "(info)", None)
    ld = results.get("load")
    if ld:
        for dtype, m in ld["loads"].items():
            add(f"load {ld['model']} ({dtype}): peak RSS over interpreter / one {dtype} copy",
                f"+{(m['max_rss'] - m['baseline_rss']) / 1e9:.2f} GB",
                f"{m['one_copy_bytes'] / 1e9:.2f} GB", m["rss_over_copy"], "~1x",
                m["rss_over_copy"] <= 1.2)
            add(f"load {ld['model']} ({dtype}): peak private memory (RssAnon) / one copy",
                f"+{(m['peak_anon'] - m['baseline_anon']) / 1e9:.2f} GB",
                f"{m['one_copy_bytes'] / 1e9:.2f} GB", m["anon_over_copy"], "~1x",
                m["anon_over_copy"] <= 1.2)
            add(f"load {ld['model']} ({dtype}): peak RSS after reading every weight / one copy",
                f"+{(m['max_rss_after_touch'] - m['baseline_rss']) / 1e9:.2f} GB",
                f"{m['one_copy_bytes'] / 1e9:.2f} GB", m["rss_over_copy_after_touch"], "~1x",
                m["rss_over_copy_after_touch"] <= 1.2)
    return rows


def markdown(info: dict, command: str, results: dict, seconds: dict, errors: dict) -> str:
    rows = rows_from(results)
    lines = [f"# CPU benchmarks, {info['date']}", "",
             f"- command: `{command}` (`make bench`)",
             f"- machine: {info['nproc']} CPUs, {info['cpu']} ({info['cpu_flags']}), "
             f"{info['ram_bytes'] / 2**30:.0f} GiB RAM, torch {info['torch']} "
             f"({info['torch_threads']} threads), Python {info['python']}, {info['platform']}",
             f"- wall time: {sum(seconds.values()):.0f} s ("
             + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ")",
             "- random weights throughout; timings are best-of / interleaved on a machine shared "
             "with other work, so ratios are the numbers to read, not absolute speeds.", "",
             "| measure | ours | reference | ratio | goal | met |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if errors:
        lines += ["", "## Failed benchmarks", ""] + [f"- {k}: {v}" for k, v in errors.items()]
    lines += ["", "## Raw results", "", "```json", json.dumps(results, indent=1, default=str),
              "```", ""]
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    from webssl_cli.atomic_io import atomic_write_bytes
    atomic_write_bytes(path, text.encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(MODULES), help="comma list of " + ", ".join(MODULES))
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test, not results)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    args = ap.parse_args(argv)
    exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    command = " ".join([exe, "-m", "benchmarks.run_cpu", *(sys.argv[1:] if argv is None else argv)])
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in MODULES]
    if unknown:
        ap.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    info = machine_info()
    info["date"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"CPU benchmarks on {info['nproc']} x {info['cpu']}, torch {info['torch']}", flush=True)
    params = QUICK if args.quick else FULL
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name in wanted:
        module = MODULES[name]
        if importlib.util.find_spec(f"benchmarks.{module}") is None:
            errors[name] = f"benchmarks/{module}.py is missing"
            continue
        print(f"\n== {name} ({module}) ==", flush=True)
        t0 = time.perf_counter()
        try:
            results[name] = run_isolated(module, params[name])
        except Exception as exc:   # one broken benchmark must not lose the others' numbers
            errors[name] = str(exc)
            print(f"   {name} failed: {exc}", file=sys.stderr, flush=True)
        seconds[name] = time.perf_counter() - t0
    text = markdown(info, command, results, seconds, errors)
    stem = "cpu-" + dt.date.today().isoformat() + ("-quick" if args.quick else "")
    out = Path(args.out)
    write_atomic(out / f"{stem}.md", text)
    write_atomic(out / f"{stem}.json", json.dumps({"machine": info, "command": command,
                                                   "seconds": seconds, "errors": errors,
                                                   "results": results}, indent=1, default=str))
    print("\n" + "\n".join(text.split("\n## Raw results")[0].splitlines()[6:]))
    print(f"\nwritten: {out / (stem + '.md')}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
