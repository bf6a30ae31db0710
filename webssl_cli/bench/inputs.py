"""`webssl bench --input`: speed of the input pipeline alone (read + decode + preprocess).

Runs the extract loader (:class:`~webssl_cli.pipeline.loader.BatchSource`, the same DataLoader
workers ``webssl extract`` uses) over the planned units of ``src`` and counts the images it
delivers, without a model. ``decode="gpu"`` also runs the batched nvJPEG step the runner does
(``pipeline.gpu_decode.decode_on_gpu``) and waits for it. The clock starts when the first batch arrives, so worker start-up
is reported apart (``startup_seconds``) and the rate is the steady-state one.
"""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from ..config import PREPROCESS_MODES, InputConfig, PreprocessConfig
from ..errors import UsageError

if TYPE_CHECKING:
    from .config import BenchConfig


def bench_input(src: str, workers: int, resolution: int, decode: str = "cpu",
                seconds: float = 20.0, batch_size: int = 64, mode: str = "resize-crop",
                input_cfg: InputConfig | None = None, jpeg_draft: bool = False) -> dict[str, Any]:
    """Images/s of read+decode+preprocess for ``src`` with ``workers`` processes.

    Stops after ``seconds`` of steady state or when the input is exhausted, whichever is first.
    """
    from ..pipeline.decode_share import ShareEstimate
    from ..pipeline.loader import BatchSource
    from ..pipeline.shared_memory import loader_prefetch
    from ..readers import plan_units

    if decode not in ("cpu", "gpu"):
        raise UsageError(f"--decode must be cpu or gpu, got {decode!r}")
    device = None
    if decode == "gpu":
        import torch
        if not torch.cuda.is_available():
            raise UsageError("--decode gpu needs a CUDA device; use --decode cpu")
        device = torch.device("cuda")
    if workers < 0:
        raise UsageError(f"--num-workers must be >= 0, got {workers}")
    if mode not in PREPROCESS_MODES:
        raise UsageError(f"--preprocess must be one of {', '.join(PREPROCESS_MODES)}")
    if resolution < 1:
        raise UsageError(f"--resolution must be a positive number of pixels, got {resolution}")
    if not (seconds > 0):   # also refuses nan
        raise UsageError(f"--seconds must be a number of seconds > 0, got {seconds}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be a positive number, got {batch_size}")
    icfg = input_cfg or InputConfig((src,))
    units = plan_units(icfg)
    pcfg = PreprocessConfig(resolution, mode, jpeg_draft=jpeg_draft)
    prefetch = loader_prefetch(batch_size, workers, resolution, device is not None, 4,
                               device is not None, lambda msg: print(msg, file=sys.stderr))
    share = ShareEstimate(workers, None) if device is not None else None   # as extract's
    source = BatchSource(icfg, pcfg, batch_size, workers, pin_memory=device is not None,
                         prefetch_factor=prefetch, gpu_decode=device is not None,
                         share=share.share if share else None)
    t_start = time.perf_counter()
    first = None
    images = failures = counted = 0
    queued = iter(units)
    try:
        for _ in range(max(2, workers + 1)):
            unit = next(queued, None)
            if unit is not None:
                source.submit(unit)
        while source.outstanding > 0:
            b = source.next_batch()
            failures += len(b.failures)
            n = len(b.indices) if b.images is not None else 0
            if share is not None:
                share.on_piece(b)
            if device is not None and b.raw_sizes:   # --decode gpu: the runner's device step
                t0 = time.perf_counter()
                n_ok, n_bad = _decode_raw(b.raw, pcfg, device)
                share.on_thread_batch(len(b.raw_sizes), time.perf_counter() - t0)
                n, failures = n + n_ok, failures + n_bad
            images += n
            if n and first is None:
                first = time.perf_counter()
            elif n:
                counted += n
            if b.end:
                unit = next(queued, None)
                if unit is not None:
                    source.submit(unit)
            if first is not None and time.perf_counter() - first >= seconds:
                break
    finally:
        source.close()
    end = time.perf_counter()
    steady = end - first if first is not None else 0.0
    if counted and steady > 0:
        rate = counted / steady
    else:   # a single batch: fall back to the whole time
        rate = images / max(end - t_start, 1e-9)
    return {"source": src, "units": len(units), "workers": workers, "decode": decode,
            "resolution": resolution, "mode": mode, "jpeg_draft": jpeg_draft,
            "batch_size": batch_size,
            "images": images, "failures": failures, "seconds": end - t_start,
            "startup_seconds": (first - t_start) if first is not None else None,
            "images_per_s": rate, "images_per_s_per_worker": rate / max(workers, 1),
            "cpu_share": share.picked_fraction() if share is not None else None}


def _decode_raw(raws, pcfg: PreprocessConfig, device) -> tuple[int, int]:
    import torch

    from ..pipeline.gpu_decode import decode_on_gpu
    images, ok, bad = decode_on_gpu(raws, pcfg, device)
    torch.cuda.synchronize(device)
    del images
    return len(ok), len(bad)


def bench_input_for(cfg: "BenchConfig", src: str, workers: int, decode: str = "cpu",
                    seconds: float = 20.0, batch_size: int | None = None,
                    mode: str = "resize-crop", jpeg_draft: bool = False) -> dict[str, Any]:
    """:func:`bench_input` at the resolution of ``cfg``'s model (224 without one), plus the
    projected input-bound wall time (and output size, given a model) for ``cfg.images``."""
    from ..model_step import parse_features
    from .model import bench_resolution, check_bench_config, choose_bench_model
    from .projection import project

    check_bench_config(cfg)
    if not (seconds > 0):   # before any model is looked up or worker started; refuses nan
        raise UsageError(f"--seconds must be a number of seconds > 0, got {seconds}")
    spec = None
    if cfg.model or cfg.model_config:
        choice = choose_bench_model(cfg)
        spec = choice.spec
        res = bench_resolution(cfg, choice)
    else:
        res = 224 if cfg.resolution is None else cfg.resolution
    bs = batch_size or (cfg.batch_size if isinstance(cfg.batch_size, int) else 64)
    out = bench_input(src, workers, res, decode, seconds, bs, mode, jpeg_draft=jpeg_draft)
    if cfg.images:
        if spec is not None:
            grid = res // spec.patch_size
            feats = parse_features(cfg.features, spec.depth, (grid, grid))
            out["projection"] = project(spec, res, feats, cfg.images, out["images_per_s"],
                                        cfg.out_dtype)
        else:
            secs = cfg.images / out["images_per_s"] if out["images_per_s"] > 0 else float("inf")
            out["projection"] = {"images": cfg.images, "wall_seconds": secs,
                                 "wall_hours": secs / 3600}
    return out
