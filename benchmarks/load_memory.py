"""Peak host memory of loading a real-size checkpoint (dino1b-full2b-224, ~4.5 GB fp32).

A random checkpoint in the official ``.pth`` layout (chunked ``blocks.<chunk>.<i>.`` keys, one
storage per tensor, fp32) is written to a temp folder without holding it in RAM: each tensor
lives in its own file-backed buffer (``torch.from_file(shared=True)``) while ``torch.save``
streams them out; the folder is deleted afterwards. A fresh interpreter then loads it with
``create_model(name, weights=file, dtype=...)`` and reports ``ru_maxrss`` (what the issue asks
for; it also counts pages of the memory-mapped checkpoint that were read, which the kernel can
drop at any time) and the sampled peak of ``RssAnon`` (private memory that cannot be dropped),
both minus the interpreter's own size after ``import torch, webssl_cli`` (baseline); then
again after reading every weight once (an fp32 load of an fp32 file assigns the mapped
tensors without reading them; the first forward pulls the pages in).
Compared with one copy of the weights in the target dtype. Goal: close to 1x.

Run: ``python -m benchmarks.load_memory``. Nothing is asserted.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench_util import ROOT, clean_cmd

_LOAD = r"""
import json, sys, time, resource
import torch
import webssl_cli.backbone.factory as factory
from benchmarks.bench_util import AnonPeak, status_kib
name, path, dtype = sys.argv[1], sys.argv[2], sys.argv[3]
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base_anon = status_kib("RssAnon") * 1024
t0 = time.perf_counter()
with AnonPeak() as anon:
    model = factory.create_model(name, weights=path, dtype=None if dtype == "fp32" else torch.bfloat16)
secs = time.perf_counter() - t0
held = sum(p.numel() * p.element_size() for p in model.parameters())
load_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with AnonPeak() as anon2, torch.no_grad():   # read every weight once, as a first forward does
    for p in model.parameters():
        p.sum()
print(json.dumps({"max_rss": load_rss,
                  "max_rss_after_touch": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "peak_anon_after_touch": anon2.peak_kib * 1024,
                  "baseline_rss": base_rss, "baseline_anon": base_anon,
                  "peak_anon": anon.peak_kib * 1024, "held_bytes": held, "seconds": secs,
                  "layout": model.load_report.layout}))
"""


def write_random_official(name: str, path: Path, work: Path) -> int:
    """Random fp32 checkpoint of ``name`` in the official chunked layout; returns its params."""
    import torch

    from webssl_cli.backbone.vit import WebSSLViT
    from webssl_cli.registry import resolve

    spec = resolve(name).record.arch
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in WebSSLViT(spec).state_dict().items()}
    per_chunk = spec.depth // max(spec.block_chunks, 1) if spec.block_chunks else 0
    g = torch.Generator().manual_seed(0)
    sd: dict[str, Any] = {}
    for i, (k, shape) in enumerate(shapes.items()):
        n = 1
        for s in shape:
            n *= s
        t = torch.from_file(str(work / f"{i:05d}.bin"), shared=True, size=n, dtype=torch.float32)
        t.uniform_(-0.02, 0.02, generator=g)
        if per_chunk and k.startswith("blocks."):
            b = int(k.split(".")[1])
            k = f"blocks.{b // per_chunk}.{k[len('blocks.'):]}"
        sd[k] = t.view(shape)
    torch.save(sd, path)
    total = sum(t.numel() for t in sd.values())
    del sd
    for f in work.glob("*.bin"):
        f.unlink()
    return total


def run(model: str = "dino1b-full2b-224", dtypes: tuple[str, ...] = ("bf16", "fp32"),
        out: Callable[[str], None] = print) -> dict[str, Any]:
    from webssl_cli.registry import param_count, resolve

    params = param_count(resolve(model).record.arch)
    res: dict[str, Any] = {"model": model, "params": params, "loads": {}}
    with tempfile.TemporaryDirectory(prefix="webssl-bench-load-") as d:
        tmp = Path(d)
        (tmp / "parts").mkdir()
        ckpt = tmp / f"{model}-random.pth"
        t0 = time.perf_counter()
        n = write_random_official(model, ckpt, tmp / "parts")
        res["checkpoint_bytes"] = ckpt.stat().st_size
        res["write_seconds"] = time.perf_counter() - t0
        out(f"load memory: wrote a random {model} checkpoint ({n:,} params, "
            f"{ckpt.stat().st_size / 1e9:.2f} GB fp32) in {res['write_seconds']:.0f}s")
        for dt in dtypes:
            proc = subprocess.run(clean_cmd([sys.executable, "-c", _LOAD, model, str(ckpt), dt]), cwd=ROOT,
                                  capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"loading subprocess failed ({dt}): {proc.stderr[-2000:]}")
            m = json.loads(proc.stdout.strip().splitlines()[-1])
            one_copy = params * (2 if dt == "bf16" else 4)
            m["one_copy_bytes"] = one_copy
            m["rss_over_copy"] = (m["max_rss"] - m["baseline_rss"]) / one_copy
            m["anon_over_copy"] = (m["peak_anon"] - m["baseline_anon"]) / one_copy
            m["rss_over_copy_after_touch"] = (m["max_rss_after_touch"] - m["baseline_rss"]) / one_copy
            res["loads"][dt] = m
            out(f"  dtype {dt}: one copy {one_copy / 1e9:.2f} GB; peak RSS {m['max_rss'] / 1e9:.2f} GB "
                f"(+{(m['max_rss'] - m['baseline_rss']) / 1e9:.2f} GB over the "
                f"{m['baseline_rss'] / 1e9:.2f} GB interpreter = {m['rss_over_copy']:.2f}x one copy); "
                f"peak private (RssAnon) +{(m['peak_anon'] - m['baseline_anon']) / 1e9:.2f} GB "
                f"= {m['anon_over_copy']:.2f}x; {m['seconds']:.1f}s; after reading every weight "
                f"once: peak RSS +{(m['max_rss_after_touch'] - m['baseline_rss']) / 1e9:.2f} GB "
                f"= {m['rss_over_copy_after_touch']:.2f}x")
    return res


if __name__ == "__main__":
    run()
