"""`webssl bench --model`: speed of the model step on synthetic images, nothing else.

A random-init model of the real size runs on the chosen device through :class:`ModelStep`
(so uint8 -> float normalization, autocast and the requested features are included), on a
fixed uint8 batch (pinned host memory on CUDA, as the loader delivers it). GPU timing waits
for the device (``torch.cuda.synchronize``) around CUDA events; FLOPs come from the
registry's closed form (``registry.flops_per_image``).
"""
from __future__ import annotations

import math
import resource
import sys
import time

import torch

from ..backbone.attention import check_backend_runs
from ..backbone.factory import (ModelChoice, choose_given, compile_blocks, create_model, pad_ffn,
                                want_pad_ffn)
from ..errors import UsageError, WebsslError
from ..model_step import ModelStep, parse_features, pick_device, pick_precision
from ..model_step.step import DTYPES
from ..model_step.autobatch import CPU_DEFAULT_BATCH, find_batch_size, is_oom, step_probe
from ..registry import flops_per_image
from .config import BenchConfig, BenchResult
from .memory import available_bytes, bench_memory_need, check_fits
from .peaks import match_peak, peak_for
from .projection import project


def choose_bench_model(cfg: BenchConfig) -> ModelChoice:
    return choose_given(cfg.model, cfg.model_config)


def check_bench_config(cfg: BenchConfig) -> None:
    """Option values that are wrong whatever the model (exit 2), checked before any work."""
    if cfg.peak_tflops is not None and not (math.isfinite(cfg.peak_tflops)
                                            and cfg.peak_tflops > 0):
        raise UsageError(f"--peak-tflops must be a finite number > 0 (the device's peak "
                         f"TFLOP/s, e.g. 989 for an H100 SXM in dense bf16), got "
                         f"{cfg.peak_tflops}")
    if cfg.resolution is not None and cfg.resolution < 1:
        raise UsageError(f"--resolution must be a positive multiple of the patch size (e.g. "
                         f"224 for patch 14), got {cfg.resolution}")


def bench_resolution(cfg: BenchConfig, choice: ModelChoice) -> int:
    """--resolution (default: the model's), a multiple of the patch size (its sign is
    checked by :func:`check_bench_config`, which callers run first)."""
    spec = choice.spec
    res = spec.img_size if cfg.resolution is None else cfg.resolution
    if res % spec.patch_size:
        lo = res // spec.patch_size * spec.patch_size
        try_ = f"{lo} or {lo + spec.patch_size}" if lo else str(spec.patch_size)
        raise UsageError(f"--resolution {res} is not a multiple of the patch size "
                         f"{spec.patch_size} of {choice.name}; try {try_}")
    return res


def check_memory(choice: ModelChoice, res: int, batch: int | str, precision: str,
                 device: torch.device) -> None:
    """Refuse (exit 2) a model that clearly cannot fit in the device's free memory, before
    anything is allocated (a CPU run would otherwise be OOM-killed without a word)."""
    held_bf16 = device.type == "cuda" and precision == "bf16"   # as below and as extract
    n = batch if isinstance(batch, int) else (1 if device.type == "cuda" else CPU_DEFAULT_BATCH)
    need = bench_memory_need(choice.spec, res, n, precision, 2 if held_bf16 else 4,
                             attention_matrix=device.type != "cuda")
    if device.type == "cuda":
        advice = ("Use --precision bf16 (weights held in bf16, half the memory), a smaller "
                  "batch or a smaller model." if not held_bf16 else
                  "Use a smaller --batch-size, a smaller model, or a GPU with more memory.")
        where = f"{device_name(device)} ({device})"
    else:
        advice = ("On a CPU the weights are held in fp32 whatever --precision says (as `webssl "
                  "extract` does), so use a smaller model (see `webssl list-models`), a smaller "
                  "--batch-size, or a CUDA GPU with --precision bf16 (half the memory).")
        where = "this machine (host RAM)"
    check_fits(need, available_bytes(device), model=f"{choice.name} at {res}px, batch {n}, "
               f"{precision}", where=where, advice=advice)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"CPU: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return "CPU"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _resolve_batch(cfg: BenchConfig, step: ModelStep, res: int, device: torch.device) -> int:
    if cfg.batch_size == "auto":
        bs = find_batch_size(step_probe(step, res, device), device=device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return bs
    try:
        bs = int(cfg.batch_size)
    except (TypeError, ValueError):
        raise UsageError(f"--batch-size must be a positive number or 'auto', got {cfg.batch_size!r}") from None
    if bs < 1:
        raise UsageError(f"--batch-size must be >= 1, got {bs}")
    return bs


def _time(step: ModelStep, images: torch.Tensor, device: torch.device, warmup: int,
          iters: int) -> float:
    for _ in range(warmup):
        step(images)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step(images)
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    for _ in range(iters):
        step(images)
    return time.perf_counter() - t0


def bench_model(cfg: BenchConfig) -> BenchResult:
    """Images/s, ms per image, TFLOP/s, MFU and peak memory of the model step on this device."""
    if cfg.iters < 1 or cfg.warmup < 0:
        raise UsageError(f"--iters must be >= 1 and --warmup >= 0 (got {cfg.iters}, {cfg.warmup})")
    check_bench_config(cfg)
    choice = choose_bench_model(cfg)
    spec = choice.spec
    device = pick_device(cfg.device)
    precision = pick_precision(cfg.precision, device)
    res = bench_resolution(cfg, choice)
    grid = res // spec.patch_size
    features = parse_features(cfg.features, spec.depth, (grid, grid))
    check_memory(choice, res, cfg.batch_size, precision, device)
    check_backend_runs(cfg.attention, device, DTYPES[precision], spec.head_dim)
    hold = torch.bfloat16 if (device.type == "cuda" and precision == "bf16") else None
    model = create_model(choice.record.name if choice.record else spec, device=device,
                         dtype=hold, random_init=True, attention=cfg.attention)
    ffn_hidden = pad_ffn(model) if want_pad_ffn(cfg.pad_ffn, device) else 0   # as extract
    pre = choice.record.preprocess if choice.record else None
    mean = pre.mean if pre else (0.485, 0.456, 0.406)
    std = pre.std if pre else (0.229, 0.224, 0.225)
    step = ModelStep(model, features, device, precision, mean, std, out_dtype=cfg.out_dtype)
    bs = _resolve_batch(cfg, step, res, device)
    if cfg.compile:   # as `webssl extract --compile`: one compiled graph shared by all blocks
        compile_blocks(model)
    images = torch.randint(0, 256, (bs, 3, res, res), dtype=torch.uint8)
    if device.type == "cuda":
        images = images.pin_memory()
    oom = False
    try:
        warmup = max(cfg.warmup, 1) if cfg.compile else cfg.warmup   # compile is not timed
        seconds = _time(step, images, device, warmup, cfg.iters)
    except Exception as exc:  # noqa: BLE001 - an OOM gets advice, anything else propagates
        if not is_oom(exc):
            raise
        oom = True
    if oom:
        raise WebsslError(f"--batch-size {bs} runs out of memory on {device_name(device)} for "
                          f"{choice.name} at {res}px ({precision}); use a smaller batch or "
                          "--batch-size auto")
    n = bs * cfg.iters
    ips = n / seconds
    gflops = flops_per_image(spec, res) / 1e9
    tflops = ips * gflops / 1e3
    name = device_name(device)
    peak, source = cfg.peak_tflops, "given" if cfg.peak_tflops else None
    if peak is None and device.type == "cuda":
        peak = peak_for(name, precision)
        hit = match_peak(name)
        if peak is not None and hit is not None:
            source = f"datasheet {hit[0]} dense bf16 ({hit[1]:g} TFLOP/s)"
    if device.type == "cuda":
        mem, kind = torch.cuda.max_memory_allocated(device), "CUDA max allocated (timed iters)"
    else:
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        kind = "process peak RSS"
    proj = project(spec, res, features, cfg.images, ips, cfg.out_dtype) if cfg.images else None
    return BenchResult(model=choice.name, device_name=name, batch_size=bs, images_per_s=ips,
                       ms_per_image=1000.0 / ips, tflops=tflops,
                       mfu=(tflops / peak) if peak else None, peak_mem_bytes=int(mem),
                       compile=cfg.compile, precision=precision, resolution=res,
                       projection=proj, device=str(device), peak_tflops=peak,
                       peak_source=source, peak_mem_kind=kind, gflops_per_image=gflops,
                       iters=cfg.iters, seconds=seconds, features=tuple(f.name for f in features),
                       attention=cfg.attention, padded_ffn_hidden=ffn_hidden)
