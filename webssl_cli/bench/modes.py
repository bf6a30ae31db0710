"""Which `webssl bench` options apply to which of its two modes.

Without ``--input`` bench times the model step on synthetic images; with ``--input SRC`` it
times the input pipeline alone (read + decode + preprocess, no model). An option of the
other mode would change nothing, so giving it is a usage error (exit 2), not silence.
"""
from __future__ import annotations

from collections.abc import Collection

from ..errors import UsageError

# used by the model step only (bench_model); --input never runs a model
MODEL_ONLY = ("--compile", "--precision", "--device", "--attention", "--pad-ffn/--no-pad-ffn",
              "--warmup", "--iters", "--peak-tflops")
# used by the input pipeline only (bench_input)
INPUT_ONLY = ("--num-workers", "--decode", "--seconds", "--preprocess", "--jpeg-draft")
# with --input, these only size the projected output of a model (--model and --images)
PROJECTION = ("--features", "--out-dtype")

_WITH_INPUT = "has no effect with --input (which times the input pipeline alone)"


def check_mode_options(given: Collection[str], input_mode: bool, *, model: bool = False,
                       images: bool = False, batch_size: int | str | None = None) -> None:
    """Refuse (UsageError, exit 2) an option of ``given`` (long option names, as the command
    line gave them) that the chosen mode ignores. ``model``: a model was named (--model or
    --model-config); ``images``: --images was given; ``batch_size``: its value."""
    if not input_mode:
        for name in INPUT_ONLY:
            if name in given:
                raise UsageError(f"{name} has no effect without --input (bench then times the "
                                 f"model on synthetic images); drop it, or add --input SRC to "
                                 f"time the input pipeline")
        return
    for name in MODEL_ONLY:
        if name in given:
            raise UsageError(f"{name} {_WITH_INPUT}; drop it")
    if "--batch-size" in given and batch_size == "auto":
        raise UsageError(f"--batch-size auto {_WITH_INPUT}: no model is sized to the device's "
                         f"memory; give a number of images per batch (default 64), or drop it")
    if not (model and images):
        for name in PROJECTION:
            if name in given:
                raise UsageError(f"{name} {_WITH_INPUT} unless --model (or --model-config) "
                                 f"and --images are given, to size the projected output; "
                                 f"drop it")
