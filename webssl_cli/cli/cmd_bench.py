"""`webssl bench`: measure the model step (or the input pipeline) on this machine."""
from __future__ import annotations

import json
from typing import Optional

import typer

from .errors import exit_on_error
from .options import PRECISION_DEFAULT, given_options, opt


def bench(
    ctx: typer.Context,
    model: Optional[str] = opt(None, "--model", "-m", help="Registry model (see `webssl list-models`)."),
    model_config: Optional[str] = opt(None, "--model-config", help="Architecture JSON file (like tests/fixtures/official/dino-tiny/spec.json) instead of --model."),
    batch_size: str = opt("auto", "--batch-size", help="Images per batch, or 'auto' (largest that fits on the GPU, with 10% headroom; 16 on CPU). With --input: a number; 64 when not given."),
    resolution: Optional[int] = opt(None, "--resolution", help="Input side in pixels, a positive multiple of the patch size; default: the model's (224 with --input and no model)."),
    precision: Optional[str] = opt(None, "--precision", help=f"Model only. Default: {PRECISION_DEFAULT}."),
    compile: bool = opt(False, "--compile", help="Model only. torch.compile the model first (compile time is not timed)."),
    pad_ffn: Optional[bool] = opt(None, "--pad-ffn/--no-pad-ffn", help="Model only. Zero-pad the SwiGLU hidden size to a multiple of 256 (same features, aligned matmuls; dino300m 1.11x on an H100). Default: on for CUDA, off for CPU."),
    device: Optional[str] = opt(None, "--device", help="Model only. Default: cuda if available."),
    attention: str = opt("auto", "--attention", help="Model only. Attention kernel."),
    features: str = opt("cls", "--features", help="Comma list of cls, patch_mean, patches, patch_grid:N, layers:K (with --input: only to size the --images projection of a model)."),
    warmup: int = opt(3, "--warmup", help="Model only. Untimed batches first."),
    iters: int = opt(10, "--iters", help="Model only. Timed batches."),
    peak_tflops: Optional[float] = opt(None, "--peak-tflops", help="Model only. Peak TFLOP/s for MFU, a number > 0 (default: datasheet dense bf16 of known GPUs)."),
    images: Optional[int] = opt(None, "--images", help="Also print projected wall time and output size for this many images."),
    out_dtype: str = opt("float16", "--out-dtype", help="Output dtype assumed by --images."),
    input_src: Optional[str] = opt(None, "--input", "-i", help="Measure the input pipeline alone on this input (no model)."),
    num_workers: int = opt(4, "--num-workers", help="With --input: DataLoader worker processes."),
    decode: str = opt("cpu", "--decode", help="With --input: gpu is batched nvJPEG on the GPU, as `extract --decode gpu`."),
    seconds: float = opt(20.0, "--seconds", help="With --input: stop after this many seconds (> 0)."),
    preprocess: str = opt("resize-crop", "--preprocess", help="With --input: how images are resized, as `extract --preprocess`."),
    jpeg_draft: bool = opt(False, "--jpeg-draft", help="With --input: DCT-scaled decoding of big JPEGs, as `extract --jpeg-draft`."),
    as_json: bool = opt(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Measure images/s, TFLOP/s, MFU and peak memory of a model on this machine.

    Runs a random-init model of the real size on synthetic images through the same model
    step as `webssl extract` (normalization and features included). No weights are needed.
    MFU is against the datasheet dense bf16 peak of known GPUs (or --peak-tflops); omitted
    on CPU unless a peak is given. With --input SRC it measures reading + decoding alone.
    A model that clearly cannot fit in the free memory of the device (weights in the dtype
    they are held in, plus one batch of activations) is refused up front (exit 2), and so is
    an option of the other mode ("Model only." with --input, "With --input:" without it).

    \b
    Examples:
      webssl bench --model dino7b-full8b-224 --batch-size auto --images 1000000
      webssl bench --model dino300m-full2b-224 --device cpu --batch-size 4 --iters 2
      webssl bench --input 'shards/{000..009}.tar' --num-workers 8
      webssl bench --input photos/ --num-workers 8 --jpeg-draft
    """
    from ..bench import BenchConfig, check_mode_options
    from ..errors import UsageError

    with exit_on_error():
        if batch_size != "auto" and not (batch_size.isdigit() and int(batch_size) > 0):
            raise UsageError(f"--batch-size must be a positive number or 'auto', got {batch_size!r}")
        if out_dtype not in ("float16", "float32"):
            raise UsageError(f"--out-dtype must be float16 or float32, got {out_dtype!r}")
        if images is not None and images < 1:
            raise UsageError(f"--images must be a positive number, got {images}")
        cfg = BenchConfig(model=model, batch_size=batch_size if batch_size == "auto" else int(batch_size),
                          resolution=resolution, precision=precision, compile=compile,
                          device=device, attention=attention, warmup=warmup, iters=iters,
                          peak_tflops=peak_tflops,
                          features=tuple(f.strip() for f in features.split(",") if f.strip()),
                          images=images, model_config=model_config, out_dtype=out_dtype,
                          pad_ffn=pad_ffn)
        check_mode_options(given_options(ctx), input_src is not None,
                           model=bool(model or model_config), images=images is not None,
                           batch_size=cfg.batch_size)
        if input_src is not None:
            from ..bench import bench_input_for
            report = bench_input_for(cfg, input_src, num_workers, decode, seconds,
                                     None if batch_size == "auto" else int(batch_size), preprocess,
                                     jpeg_draft)
            _print_input(report, as_json)
            return
        from ..bench import bench_model
        result = bench_model(cfg)
    _print_model(result.to_dict(), as_json)


def _show(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column rich table: what, value."""
    from rich.console import Console
    from rich.table import Table
    t = Table(title=title, show_header=False)
    t.add_column("what")
    t.add_column("value")
    for k, v in rows:
        t.add_row(k, v)
    Console().print(t)


def _print_model(r: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(r, indent=2))
        return
    from ..bench import human_seconds
    from ..registry.summary import human_bytes

    rows = [
        ("batch size", str(r["batch_size"])),
        ("resolution / precision", f"{r['resolution']} px / {r['precision']}"
                                   + (" / compiled" if r["compile"] else "")
                                   + (f" / FFN padded to {r['padded_ffn_hidden']}"
                                      if r.get("padded_ffn_hidden") else "")),
        ("features", ", ".join(r["features"])),
        ("images/s", f"{r['images_per_s']:.2f}"),
        ("ms per image", f"{r['ms_per_image']:.2f}"),
        ("achieved TFLOP/s", f"{r['tflops']:.3g} ({r['gflops_per_image']:.4g} GFLOPs/image)"),
        ("MFU", f"{100 * r['mfu']:.1f}% of {r['peak_tflops']:g} TFLOP/s ({r['peak_source']})"
                if r["mfu"] is not None else "n/a (no known peak; pass --peak-tflops)"),
        ("peak memory", f"{human_bytes(r['peak_mem_bytes'])} ({r['peak_mem_kind']})"),
    ]
    p = r.get("projection")
    if p:
        rows += [(f"{p['images']:,} images: wall time", human_seconds(p["wall_seconds"])),
                 (f"{p['images']:,} images: output", f"{human_bytes(p['output_bytes'])} "
                  f"({human_bytes(p['bytes_per_image'])}/image, {p['out_dtype']}, before compression)")]
    _show(f"webssl bench: {r['model']} on {r['device_name']}", rows)


def _print_input(r: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(r, indent=2))
        return
    from ..bench import human_seconds
    from ..registry.summary import human_bytes

    rows = [
        ("units / images read", f"{r['units']} / {r['images']} ({r['failures']} failed)"),
        ("workers / decode", f"{r['workers']} / {r['decode']}"
                             + (f" (workers decoded {r['cpu_share']:.0%} of the GPU-decodable "
                                "JPEGs)" if r.get("cpu_share") is not None else "")),
        ("resolution / preprocess", f"{r['resolution']} px / {r['mode']}"
                                     + (" + --jpeg-draft" if r.get("jpeg_draft") else "")),
        ("images/s", f"{r['images_per_s']:.1f} ({r['images_per_s_per_worker']:.1f} per worker)"),
        ("worker start-up", f"{r['startup_seconds']:.2f} s" if r["startup_seconds"] is not None else "n/a"),
    ]
    p = r.get("projection")
    if p:
        rows.append((f"{p['images']:,} images: input-bound wall time", human_seconds(p["wall_seconds"])))
        if "output_bytes" in p:
            rows.append((f"{p['images']:,} images: output", human_bytes(p["output_bytes"])))
    _show(f"webssl bench --input {r['source']}", rows)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
