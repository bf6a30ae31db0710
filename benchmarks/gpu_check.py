"""One-command GPU check: model throughput/MFU (eager and compiled), native vs transformers,
end-to-end extraction with CPU and GPU decoding, bf16-vs-fp32 feature agreement, and the
CUDA-only code paths (``paths``: benchmarks/gpu_paths.py). Prints
one Markdown table. transformers must be importable for the ``hf`` section (on the device
machine: its wheels in ``.whl/``); a section that fails is reported and the rest still run.

    PYTHONPATH=. python benchmarks/gpu_check.py --out results.md          # ~6 min on an H100
    PYTHONPATH=. python benchmarks/gpu_check.py --smoke --out /tmp/x.md   # tiny CPU dry run

Random weights throughout (real-size architectures). MFU is against a dense bf16 peak of
790 TFLOP/s (matmul measured on the H100/H200 machines used here), override with --peak.
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.gpu_paths import path_rows
from benchmarks.gpu_timing import sync, time_call
from webssl_cli.backbone.factory import compile_blocks, create_model, pad_ffn, want_pad_ffn
from webssl_cli.model_step import ModelStep
from webssl_cli.model_step.features import parse_features
from webssl_cli.registry import flops_per_image, resolve

MODELS = [  # (name, batch sizes to try)
    ("dino300m-full2b-224", (128, 256, 512)),
    ("mae300m-full2b-224", (128, 256, 512)),
    ("dino1b-full2b-224", (64, 128, 256)),
    ("dino7b-full8b-224", (32, 64, 128)),
    ("dino7b-full8b-518", (4, 8, 16)),
]
SMOKE_SPEC = {"family": "dino", "embed_dim": 64, "depth": 2, "num_heads": 4, "patch_size": 14,
              "img_size": 56}


class Table:
    """The result rows: each one printed as JSON when added, and the Markdown table (plus its
    JSON) rewritten at once, so a run cut short by the lease still leaves what it measured."""

    def __init__(self, out: str, header: str) -> None:
        self.out, self.header, self.rows = Path(out), header, []

    def add(self, model: str, mode: str, batch: int = 0, img_s: float = 0.0, flops: float = 0.0,
            peak: float = 1.0, peak_mem_gib: float = 0.0, **extra) -> None:
        row = {"model": model, "mode": mode, "batch": batch, "img_s": img_s,
               "tflops": img_s * flops / 1e12, "mfu": img_s * flops / 1e12 / peak,
               "peak_mem_gib": peak_mem_gib, **extra}
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        self.write()

    def markdown(self, footer: str = "") -> str:
        lines = [self.header, "", "| model | mode | batch | img/s | TFLOP/s | MFU | peak GiB |",
                 "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['mode']} | {r['batch']} | {r['img_s']:.1f} | "
                  f"{r['tflops']:.1f} | {100 * r['mfu']:.1f}% | {r['peak_mem_gib']:.1f} |"
                  for r in self.rows]
        return "\n".join(lines + ([f"\n{footer}"] if footer else []))

    def write(self, footer: str = "(run still going or cut short)") -> None:
        self.out.write_text(self.markdown(footer) + "\n")
        self.out.with_suffix(".json").write_text(
            json.dumps({"header": self.header, "rows": self.rows}, indent=1))


def as_extract_runs(model, dev: torch.device):
    """The model as `webssl extract` runs it by default on this device (FFN padding)."""
    if want_pad_ffn(None, dev):
        pad_ffn(model)
    return model


def fresh_compile(model, mode: str | None = None) -> None:
    """compile_blocks with dynamo's caches cleared first: every model of this script shares
    Block.forward, whose recompile limit (8) would otherwise silently send later models
    (e.g. dino7b@518) back to eager. (A `webssl` process compiles one model.)"""
    torch._dynamo.reset()
    compile_blocks(model, mode)


def time_step(step: ModelStep, bs: int, res: int, dev: torch.device, seconds: float = 2.0) -> float:
    x = torch.randint(0, 256, (bs, 3, res, res), dtype=torch.uint8, device=dev)
    return time_call(lambda: step(x), bs, dev, seconds)


def model_rows(args, dev, table: Table, deadline):
    pick = set(filter(None, args.models.split(",")))
    models = [("smoke", (4, 8))] if args.smoke else [m for m in MODELS if not pick or m[0] in pick]
    for name, sizes in models:
        spec = SMOKE_SPEC if args.smoke else resolve(name).record.arch
        arch = resolve(name).record.arch if not args.smoke else None
        res = spec["img_size"] if args.smoke else arch.img_size
        flops = 0.0 if args.smoke else flops_per_image(arch)
        dtype = torch.bfloat16 if dev.type == "cuda" else None
        model = as_extract_runs(create_model(spec if args.smoke else name, random_init=True,
                                             device=dev, dtype=dtype), dev)
        feats = parse_features("cls", model.spec.depth, (res // 14, res // 14))
        mk = lambda m, pad=None: ModelStep(m, feats, dev, "bf16" if dev.type == "cuda" else "fp32",  # noqa: E731
                                          (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), pad_to=pad)
        best = (0.0, 0)
        for bs in sizes:
            try:
                torch.cuda.reset_peak_memory_stats() if dev.type == "cuda" else None
                ips = time_step(mk(model), bs, res, dev, args.seconds)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                break
            mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0.0
            if ips > best[0]:
                best = (ips, bs, mem)
        ips, bs, mem = best
        table.add(name, "eager", bs, ips, flops, args.peak, mem)
        if time.perf_counter() < deadline:
            t0 = time.perf_counter()
            fresh_compile(model)
            step = mk(model, bs)
            step(torch.zeros(bs, 3, res, res, dtype=torch.uint8, device=dev))
            sync(dev)
            ctime = time.perf_counter() - t0
            torch.cuda.reset_peak_memory_stats() if dev.type == "cuda" else None
            ips = time_step(step, bs, res, dev, args.seconds)
            mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0.0
            table.add(name, f"compiled ({ctime:.0f}s compile)", bs, ips, flops, args.peak, mem)
        del model
        torch.cuda.empty_cache() if dev.type == "cuda" else None


def _make_shard(args_):
    path, n, seed = args_
    import webdataset as wds
    from PIL import Image
    rng = np.random.default_rng(seed)
    base = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(Path("examples/images").glob("*.jpg"))]
    with wds.TarWriter(str(path)) as tw:
        for i in range(n):
            img = base[i % len(base)]
            w, h = int(rng.integers(400, 900)), int(rng.integers(300, 700))
            im = Image.fromarray(img).resize((w, h))
            arr = np.asarray(im).astype(np.int16) + rng.integers(-8, 8, (h, w, 3))
            buf = io.BytesIO()
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
            tw.write({"__key__": f"{i:06d}", "jpg": buf.getvalue()})


def decode_path_on_cpu(cfg):
    """Smoke only: the ``--decode gpu`` pipeline on the CPU device (the CLI refuses it there),
    as tests/test_device_decode.py runs it, so the script's gpu-decode rows are exercised."""
    from webssl_cli.distributed import detect_rank
    from webssl_cli.distributed.signals import StopFlag
    from webssl_cli.pipeline.runner import RankRun
    from webssl_cli.pipeline.setup import prepare
    rank = detect_rank()
    return RankRun(prepare(cfg, rank, "fp32"), rank, torch.device("cpu"), "fp32").run(StopFlag())


E2E_BIG_BATCH = {"dino1b-full2b-224": 256, "dino2b-full2b-224": 256, "dino3b-full2b-224": 128,
                 "dino5b-full2b-224": 128, "dino7b-full8b-224": 128, "dino7b-full8b-518": 16}
E2E_UNITS = {"dino2b-full2b-224": 24,     # 6,000 images (~13 s at 65% MFU, 472 img/s)
             "dino3b-full2b-224": 16,     # 4,000 images (~12 s at 334 img/s)
             "dino5b-full2b-224": 10,     # 2,500 images (~12 s at 200 img/s)
             "dino7b-full8b-224": 10,     # 2,500 images (~15 s at 170 img/s)
             "dino7b-full8b-518": 3}      # 750 images (~27 s at 28 img/s)


def e2e_rows(args, dev, table: Table, tmp: Path):
    """End to end on a real-size JPEG WebDataset vs the model alone, same run and settings:
    dino300m (data-bound: CPU and GPU decoding) and dino1b compiled (compute-bound: MFU)."""
    from webssl_cli import read_features
    from webssl_cli.config import ExtractConfig, InputConfig, ModelConfig, OutputConfig, RuntimeConfig
    from webssl_cli.pipeline.api import extract

    gpu = dev.type == "cuda"
    shards, per = (2, 16) if args.smoke else (64, 250)   # many units: no long tail
    (tmp / "shards").mkdir()
    with mp.get_context("spawn").Pool(min(16, os.cpu_count() or 1)) as pool:
        pool.map(_make_shard, [(tmp / "shards" / f"s-{i:04d}.tar", per, i) for i in range(shards)])
    workers = 2 if args.smoke else min(14, (os.cpu_count() or 2) - 2)
    # --decode gpu on a CPU device (smoke) runs the same overlapped decode path, without streams
    # (decode, compiled, batch, --cpu-share: None is auto; 0.0 sends every JPEG it can to GPU)
    plans = [("dino300m-full2b-224",
              [("cpu", False, 8, None), ("gpu", False, 8, 0.0), ("gpu", False, 8, None)]
              if args.smoke else
              [("cpu", False, 256, None)]
              + ([("gpu", False, 256, 0.0), ("gpu", False, 256, None), ("gpu", False, 256, 0.5),
                  ("gpu", True, 512, 0.0),
                  ("gpu", True, 512, None)] if gpu else []))]
    if gpu and not args.smoke:      # compute-bound models, compiled: end-to-end MFU
        for big in filter(None, args.e2e_big.split(",")):
            plans.append((big, [("cpu", True, E2E_BIG_BATCH.get(big, 64), None)]))
    outs = {}
    for name, modes in plans:
        spec = SMOKE_SPEC if args.smoke else resolve(name).record.arch.to_dict()
        spec_path = tmp / f"{name}.json"
        spec_path.write_text(json.dumps(spec))
        state = create_model(spec, random_init=True, device=dev,      # fast init on the GPU
                             dtype=torch.bfloat16).state_dict()
        # in /dev/shm where it fits with 16 GiB to spare: a checkpoint on disk (12 GiB for
        # dino7b) is still being written back during the timed runs and stalls their writes
        size = sum(t.numel() * t.element_size() for t in state.values())
        shm = Path("/dev/shm")
        fits = shm.is_dir() and shutil.disk_usage(shm).free >= size + (16 << 30)
        ckpt = (shm / f"webssl-gpu-check-{os.getpid()}-{name}.pth") if fits else tmp / f"{name}.pth"
        try:
            torch.save(state, ckpt)
            del state
            flops = 0.0 if args.smoke else flops_per_image(resolve(name).record.arch)
            res = spec["img_size"]
            baseline = {}
            for _, comp, bs, _ in modes:     # the model alone on synthetic uint8, same batch, mode
                if (comp, bs) in baseline:
                    continue
                m = as_extract_runs(create_model(spec, random_init=True, device=dev,
                                                 dtype=torch.bfloat16 if gpu else None), dev)
                if comp:
                    fresh_compile(m)
                feats = parse_features("cls", m.spec.depth, (res // 14, res // 14))
                step = ModelStep(m, feats, dev, "bf16" if gpu else "fp32", (0.485, 0.456, 0.406),
                                 (0.229, 0.224, 0.225), pad_to=bs if comp else None)
                baseline[(comp, bs)] = time_step(step, bs, res, dev, args.seconds)
                del m, step
            for decode, comp, bs, share in modes:
                out = tmp / f"out-{name}-{decode}-{int(comp)}-{share}"
                cfg = ExtractConfig(
                    input=InputConfig((str(tmp / "shards"),)),
                    model=ModelConfig(model_config=str(spec_path), weights=str(ckpt),
                                      device=str(dev), compile=comp),
                    output=OutputConfig(str(out)),
                    runtime=RuntimeConfig(batch_size=bs, num_workers=workers, decode=decode,
                                          cpu_share=share, progress_every=1e9,
                                          limit_units=E2E_UNITS.get(name)))
                t0 = time.perf_counter()
                r = extract(cfg) if gpu or decode == "cpu" else decode_path_on_cpu(cfg)
                wall = time.perf_counter() - t0
                # steady: from the first model batch on (what a long run sustains); the loop
                # rate also pays the workers' start-up, once per run
                rate = r.images / max(r.steady_seconds, 1e-9)
                loop = r.images / max(r.loop_seconds, 1e-9)
                only = baseline[(comp, bs)]
                busy_note = (f"; decode thread busy {r.decode_thread_seconds / r.loop_seconds:.0%}"
                             if r.decode_thread_seconds else "")
                how = "" if decode == "cpu" else (
                    f" (--cpu-share {'auto' if share is None else share}: workers decoded "
                    f"{r.cpu_share or 0:.0%})")
                table.add(f"{name} e2e extract",
                          f"decode {decode}{how}{', compiled' if comp else ''}, {workers} workers: steady "
                          f"{rate / only:.2f}x of model-only {only:.0f} img/s (with start-up "
                          f"{loop / only:.2f}x, first batch after {r.first_batch_seconds:.2f}s; "
                          f"wall incl. load {r.images / wall:.0f} img/s{busy_note})",
                          bs, rate, flops, args.peak, images=r.images, exit=r.exit_code,
                          failed_samples=r.failures, loop_img_s=loop, model_only_img_s=only,
                          summary=r.summary)
                outs[(name, decode, comp, share)] = out
        finally:    # 4-14 GB each for the big models: the lent disk is 64 GiB, and /dev/shm
            ckpt.unlink(missing_ok=True)      # is memory
    a_out = outs.get(("dino300m-full2b-224", "cpu", False, None))
    for share in (0.0, None):
        b_out = outs.get(("dino300m-full2b-224", "gpu", False, share))
        if a_out and b_out:
            k1, a = read_features(a_out)
            k2, b = read_features(b_out)
            assert k1 == k2
            cos = torch.nn.functional.cosine_similarity(torch.from_numpy(a).float(),
                                                        torch.from_numpy(b).float(), dim=-1)
            table.add(f"dino300m cls: --decode gpu (--cpu-share {'auto' if share is None else share})"
                      " vs cpu", f"cos min {cos.min():.5f} mean {cos.mean():.5f} over {len(k1)} images")


HF_MODELS = [("dino300m-full2b-224", 256), ("mae300m-full2b-224", 256), ("dino1b-full2b-224", 128)]


def hf_rows(args, dev, table: Table, tmp: Path):
    """Native backbone vs transformers (Dinov2Model / ViTModel, SDPA) on the very same weights,
    input and batch: HF as people run it (fp32 weights under bf16 autocast) and with bf16
    weights; ours eager (bf16 weights) and compiled. Ratios are over HF's faster mode."""
    from benchmarks.model_vs_transformers import hf_model
    from webssl_cli.registry import ArchSpec
    half = dev.type == "cuda"
    for name, bs in ([("smoke", 4)] if args.smoke else HF_MODELS):
        arch = ArchSpec.from_dict(SMOKE_SPEC) if args.smoke else resolve(name).record.arch
        flops = 0.0 if args.smoke else flops_per_image(arch)
        with torch.device(dev):          # random init on the GPU: seconds, not minutes
            theirs = hf_model(arch)
        folder = tmp / f"hf-{name}"
        theirs.save_pretrained(folder)
        ours = as_extract_runs(create_model(arch if args.smoke else name, weights=folder,
                                            device=dev, dtype=torch.bfloat16 if half else None),
                               dev)
        theirs.to(dev)
        x = torch.randn(bs, 3, arch.img_size, arch.img_size, device=dev)

        def call(fn):
            def run():
                with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16, enabled=half):
                    fn()
            return run

        with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16, enabled=half):
            a = ours.forward_features(x[:2])["x_norm_clstoken"].float()
            b = theirs(pixel_values=x[:2]).last_hidden_state[:, 0].float()
        agree = float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min())
        ips = {"HF fp32 weights + autocast": time_call(call(lambda: theirs(pixel_values=x)),
                                                        bs, dev, args.seconds)}
        if half:
            theirs.to(torch.bfloat16)
            ips["HF bf16 weights"] = time_call(call(lambda: theirs(pixel_values=x)), bs, dev,
                                               args.seconds)
        ref = max(ips.values())
        ips["ours eager"] = time_call(call(lambda: ours.forward_features(x)), bs, dev, args.seconds)
        del theirs
        fresh_compile(ours)
        ips["ours compiled"] = time_call(call(lambda: ours.forward_features(x)), bs, dev,
                                         args.seconds)
        for mode, v in ips.items():
            table.add(f"{name} vs transformers", f"{mode}: {v / ref:.2f}x of HF best"
                      + (f" (CLS cos ours/HF {agree:.5f})" if mode == "ours eager" else ""),
                      bs, v, flops, args.peak)
        del ours
        torch.cuda.empty_cache() if half else None


VARIANT_MODELS = [("dino300m-full2b-224", 256), ("dino1b-full2b-224", 256)]


def variant_rows(args, dev, table: Table):
    """Compiled model-only rates under other settings, over the default (as `webssl
    extract --compile` runs: SDPA 'auto', FFN padded on CUDA): no FFN padding, forced
    attention kernels, and with --autotune inductor's max-autotune (1.5-3 min of compile)."""
    from webssl_cli.registry import ArchSpec
    gpu = dev.type == "cuda"
    for name, bs in ([("smoke", 8)] if args.smoke else VARIANT_MODELS):
        arch = ArchSpec.from_dict(SMOKE_SPEC) if args.smoke else resolve(name).record.arch
        res, flops = arch.img_size, 0.0 if args.smoke else flops_per_image(arch)
        # (label, attention, pad the FFN, compile mode)
        variants = [("default", "auto", want_pad_ffn(None, dev), None),
                    ("FFN not padded" if gpu else "FFN padded", "auto", not gpu, None),
                    ("attention flash", "flash", gpu, None)]
        if gpu:
            variants += [("attention cudnn", "cudnn", True, None),
                         ("attention efficient", "efficient", True, None)]
            if args.autotune:
                variants.append(("max-autotune-no-cudagraphs", "auto", True,
                                 "max-autotune-no-cudagraphs"))
        ref = None
        for label, attention, pad, mode in variants:
            try:
                m = create_model(arch, random_init=True, device=dev,
                                 dtype=torch.bfloat16 if gpu else None, attention=attention)
                hidden = pad_ffn(m) if pad else 0
                t0 = time.perf_counter()
                fresh_compile(m, mode)
                feats = parse_features("cls", m.spec.depth, (res // 14, res // 14))
                step = ModelStep(m, feats, dev, "bf16" if gpu else "fp32", (0.485, 0.456, 0.406),
                                 (0.229, 0.224, 0.225), pad_to=bs)
                step(torch.zeros(bs, 3, res, res, dtype=torch.uint8, device=dev))
                sync(dev)
                ctime = time.perf_counter() - t0
                ips = time_step(step, bs, res, dev, args.seconds)
            except Exception as exc:   # e.g. a kernel this card or torch lacks
                table.add(f"{name} compiled", f"{label}: FAILED {type(exc).__name__}: {exc}"[:200])
                continue
            ref = ref or ips
            table.add(f"{name} compiled", f"{label}{f' (FFN {hidden})' if hidden else ''}: "
                      f"{ips / ref:.2f}x of default ({ctime:.0f}s compile)", bs, ips, flops,
                      args.peak)
            del m, step
            torch.cuda.empty_cache() if gpu else None


def decode_rows(args, dev, table: Table):
    """--decode gpu's device step alone (nvJPEG + resize/crop) on batches of 256 JPEGs, same
    size (256x256 as img2dataset writes them: crop only; 512x384) and mixed sizes: the
    batched resize (two matmuls per chunk) vs one ``preprocess`` call per image. Rows give
    images/s with the device synced, the host time per call (Python + launches: what holds
    the GIL against the model's thread) and how far the two outputs are apart in levels."""
    from PIL import Image

    from webssl_cli.config import PreprocessConfig
    from webssl_cli.pipeline.gpu_decode import decode_on_gpu
    base = [Image.open(p).convert("RGB") for p in sorted(Path("examples/images").glob("*.jpg"))]
    n = 16 if args.smoke else 256

    def jpeg(i: int, w: int, h: int) -> torch.Tensor:
        buf = io.BytesIO()
        base[i % len(base)].resize((w, h)).save(buf, "JPEG", quality=90)
        return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)

    def host_ms(fn) -> float:
        best = float("inf")
        for _ in range(5):
            sync(dev)
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best * 1e3

    rng = np.random.default_rng(0)
    k = 4 if args.smoke else 1     # smoke: a quarter of every side (a CPU runs the matmuls)
    sets = {"same size 256x256 (crop only at 224)": [jpeg(i, 256 // k, 256 // k)
                                                     for i in range(n)],
            "same size 512x384": [jpeg(i, 512 // k, 384 // k) for i in range(n)],
            "mixed sizes": [jpeg(i, int(rng.integers(400, 900)) // k,
                                 int(rng.integers(300, 700)) // k) for i in range(n)]}
    pcfg = PreprocessConfig(224 // k)
    for label, raws in sets.items():
        calls = {"per-image": lambda: decode_on_gpu(raws, pcfg, dev, batched=False),
                 "batched": lambda: decode_on_gpu(raws, pcfg, dev)}
        rates = {how: time_call(fn, n, dev, args.seconds) for how, fn in calls.items()}
        for how, fn in calls.items():
            table.add("decode_on_gpu (device step alone)",
                      f"{label}, {how}: {rates[how] / rates['per-image']:.2f}x of per-image; "
                      f"host {host_ms(fn):.1f} ms per call", n, rates[how])
        diff = (calls["batched"]()[0].int() - calls["per-image"]()[0].int()).abs()
        table.add("decode_on_gpu (device step alone)",
                  f"{label}: batched vs per-image max {int(diff.max())} levels, "
                  f"{(diff > 0).float().mean().item():.4%} of values differ")


def cosine_rows(args, dev, table: Table):
    name = "dino300m-full2b-224"
    spec = SMOKE_SPEC if args.smoke else name
    m32 = create_model(spec, random_init=True, device=dev)
    res = m32.spec.img_size
    x = torch.randint(0, 256, (32, 3, res, res), dtype=torch.uint8, device=dev)
    feats = parse_features("cls,patches", m32.spec.depth, (res // 14, res // 14))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = ModelStep(m32, feats, dev, "fp32", mean, std, out_dtype="float32")(x)
    hold = create_model(spec, random_init=True, device=dev,
                        dtype=torch.bfloat16 if dev.type == "cuda" else None)
    low = ModelStep(hold, feats, dev, "bf16", mean, std, out_dtype="float32")(x)
    for k in ("cls", "patches"):
        a, b = ref[k].flatten(0, -2).float(), low[k].flatten(0, -2).float()
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        table.add(f"{name} bf16 vs fp32 ({k})", f"cos min {cos.min():.5f} mean {cos.mean():.5f}", 32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU: checks the script")
    ap.add_argument("--peak", type=float, default=790.0)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--budget", type=float, default=330.0,
                    help="seconds for the model section, from its start: past it, no more "
                         "compiled rows")
    ap.add_argument("--e2e-big", default="dino1b-full2b-224,dino7b-full8b-224",
                    help="compute-bound models run end to end, compiled (comma list; "
                         "dino7b-full8b-224 takes ~1.5 min of it, dino7b-full8b-518 adds ~1.5 "
                         "min; dino2b/3b/5b-full2b-224 have batch sizes and image counts set, "
                         "~1-1.5 min each, not yet timed)")
    ap.add_argument("--models", default="",
                    help="models section: comma list of the models to run (default: all five)")
    ap.add_argument("--autotune", action="store_true",
                    help="variants: also inductor max-autotune (adds 1.5-3 min of compile per model)")
    ap.add_argument("--skip", default="",
                    help="comma list of sections to skip: cosine,models,hf,e2e,variants,decode,paths")
    ap.add_argument("--order", default="paths,cosine,models,hf,e2e,variants,decode",
                    help="sections in the order to run them; e.g. e2e,variants,models puts the "
                         "end-to-end rows first when the lease is short")
    args = ap.parse_args()
    if args.smoke:          # exercises every code path; its timings mean nothing
        args.seconds = min(args.seconds, 0.2)
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    header = (f"GPU check {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {name}, "
              f"torch {torch.__version__}, peak {args.peak} TFLOP/s")
    print(header, flush=True)
    table = Table(args.out, header)
    start = time.perf_counter()
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory() as td:
        sections = {"cosine": lambda: cosine_rows(args, dev, table),
                    "models": lambda: model_rows(args, dev, table,
                                                 time.perf_counter() + args.budget),
                    "hf": lambda: hf_rows(args, dev, table, Path(td)),
                    "e2e": lambda: e2e_rows(args, dev, table, Path(td)),
                    "variants": lambda: variant_rows(args, dev, table),
                    "decode": lambda: decode_rows(args, dev, table),
                    "paths": lambda: path_rows(args, dev, table, Path(td), SMOKE_SPEC)}
        for section in [s for s in args.order.split(",") if s in sections]:
            fn = sections[section]
            if section in skip:
                continue
            t0 = time.perf_counter()
            try:
                fn()
            except Exception as exc:   # keep going: one failing section must not hide the others
                table.add(section, f"FAILED {type(exc).__name__}: {exc}"[:200])
                import traceback
                traceback.print_exc()
            print(f"section {section}: {time.perf_counter() - t0:.0f}s", flush=True)
    footer = (f"total {time.perf_counter() - start:.0f}s; command: PYTHONPATH=. python "
              f"benchmarks/gpu_check.py {' '.join(sys.argv[1:])}")
    table.write(footer)
    print(table.markdown(footer))


if __name__ == "__main__":
    main()
