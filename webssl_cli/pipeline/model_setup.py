"""A rank's model: its device, the backbone built with the run's options, and the batch size
settled (``--batch-size auto`` probed, ``--compile`` applied at that size)."""
from __future__ import annotations

import torch

from ..config import ExtractConfig
from ..distributed import RankInfo
from ..model_step import ModelStep, pick_device
from ..model_step.step import DTYPES
from .progress import log
from .setup import Prepared


def rank_device(requested: str | None, rank: RankInfo) -> torch.device:
    dev = pick_device(requested)
    if dev.type == "cuda" and dev.index is None and rank.world_size > 1:
        dev = torch.device("cuda", rank.local_rank % max(torch.cuda.device_count(), 1))
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)   # or every rank would also open a context on cuda:0
    return dev


def check_attention(cfg: ExtractConfig, device: torch.device, precision: str) -> None:
    """A forced --attention kernel that cannot run here is a usage error, found before
    anything is written to the output folder (``backbone.attention.check_backend_runs``)."""
    from ..backbone.attention import check_backend_runs
    from .setup import choose_model
    check_backend_runs(cfg.model.attention, device, DTYPES[precision],
                       choose_model(cfg).spec.head_dim)


def build_step(prep: Prepared, device: torch.device, precision: str) -> ModelStep:
    from ..backbone.factory import create_model, pad_ffn, want_pad_ffn
    m = prep.cfg.model
    hold = torch.bfloat16 if (device.type == "cuda" and precision == "bf16") else None
    model = create_model(prep.choice.spec if prep.choice.record is None else prep.choice.record.name,
                         weights=prep.weights, device=device, dtype=hold, attention=m.attention)
    if want_pad_ffn(m.pad_ffn, device):
        pad_ffn(model)
    return ModelStep(model, prep.features, device, precision, prep.pcfg.mean, prep.pcfg.std,
                     normalize=prep.cfg.output.normalize, out_dtype=prep.cfg.output.out_dtype)


def settle_batch_size(step: ModelStep, prep: Prepared, rank: RankInfo) -> int:
    """Resolve --batch-size auto by probing the device (eager), then apply --compile with
    padding to that fixed size so the last partial batch never recompiles."""
    from ..backbone.factory import compile_blocks
    from ..model_step.autobatch import find_batch_size, step_probe
    bs = prep.cfg.runtime.batch_size
    if bs == "auto":
        bs = find_batch_size(step_probe(step, prep.pcfg.resolution, step.device),
                             device=step.device, limit=2048)
        log(rank, f"--batch-size auto: {bs} images per batch on {step.device}")
    if prep.cfg.model.compile:
        compile_blocks(step.model)
        step.pad_to = bs
    return bs
