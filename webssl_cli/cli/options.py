"""What every command's options share: placeholders that say the values, and the set of
options a command line gave (not left at their defaults). Parsing only, no logic."""
from __future__ import annotations

from typing import Any

import typer

# The --help placeholder of each option that takes a value: the choices where there are a
# few, else what to give. One table for every command, so one option reads the same in all.
METAVARS = {
    "--input": "SRC", "--out": "DIR", "--model": "NAME", "--model-config": "SPEC.json",
    "--weights": "PATH", "--source": "hf|pth", "--cache-dir": "DIR",
    "--features": "LIST", "--format": "parquet|npy", "--out-dtype": "float16|float32",
    "--manifest-name": "NAME", "--shard-size": "N", "--image-key": "EXT[,EXT...]",
    "--image-column": "COL", "--key-column": "COL", "--s3-endpoint-url": "URL",
    "--preprocess": "resize-crop|squash|shortest-crop", "--max-image-pixels": "N",
    "--resolution": "PX", "--device": "cuda|cuda:N|cpu", "--precision": "bf16|fp16|fp32",
    "--batch-size": "N|auto", "--num-workers": "N", "--decode": "cpu|gpu",
    "--cpu-share": "auto|0..1",
    "--attention": "auto|flash|efficient|cudnn|math|xformers", "--gpus": "N",
    "--lease": "SECONDS", "--progress-every": "SECONDS", "--limit-units": "N",
    "--warmup": "N", "--iters": "N", "--peak-tflops": "TFLOPS", "--images": "N",
    "--seconds": "SECONDS", "--feature-memory": "MIB",
}

# --precision's default, said the same way by every command (model_step.pick_precision)
PRECISION_DEFAULT = ("bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16 or AMX), "
                     "else fp32")


def opt(default: Any, *names: str, **kwargs: Any) -> Any:
    """``typer.Option`` with the placeholder of :data:`METAVARS` for its long name."""
    long = next((n for n in names if n.startswith("--")), "")
    if long in METAVARS:
        kwargs.setdefault("metavar", METAVARS[long])
    return typer.Option(default, *names, **kwargs)


def given_options(ctx: typer.Context) -> set[str]:
    """Long names of the options this command line gave (an environment variable counts),
    as ``--pad-ffn/--no-pad-ffn`` for an on/off pair; options left at their default are
    not in it."""
    out = set()
    for p in ctx.command.params:
        source = ctx.get_parameter_source(p.name)   # click's ParameterSource (typer vendors it)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            continue
        longs = [o for o in (*p.opts, *getattr(p, "secondary_opts", ())) if o.startswith("--")]
        out.add("/".join(longs) if longs else p.opts[0])
    return out
