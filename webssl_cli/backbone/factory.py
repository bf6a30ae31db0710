"""Build a model from a registry name or an architecture spec, with strict weight loading.

``create_model`` builds on the meta device and assigns the loaded tensors, so loading never
needs more host memory than about one copy of the weights in the target dtype.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints.load import FP32_SUFFIXES, LoadReport, load_weights
from ..errors import UsageError
from ..registry import ArchSpec, ModelRecord, resolve
from .vit import WebSSLViT


@dataclass(frozen=True)
class ModelChoice:
    spec: ArchSpec
    name: str                     # registry short name, or "custom:<file>"
    record: ModelRecord | None


def choose(name_or_spec: str | Path | ArchSpec | dict[str, Any]) -> ModelChoice:
    """Registry name (any form), ArchSpec, spec dict, or path to a spec JSON file (the Python
    API accepts either; the CLI's --model / --model-config go through :func:`choose_given`)."""
    if isinstance(name_or_spec, ArchSpec):
        name_or_spec.validate("architecture")
        return ModelChoice(name_or_spec, "custom", None)
    if isinstance(name_or_spec, dict):
        return ModelChoice(ArchSpec.from_dict(name_or_spec), "custom", None)
    text = str(name_or_spec)
    p = Path(text).expanduser()
    if text.endswith(".json") or p.is_file() or (p.is_dir() and ("/" in text or "\\" in text)):
        return _from_spec_file(text, "model config")
    return _from_registry(text)


def choose_given(model: str | None, model_config: str | Path | None) -> ModelChoice:
    """The architecture named by ``--model NAME`` xor ``--model-config SPEC.json``.

    They are not interchangeable: --model takes a registry name, --model-config a spec JSON
    file; each refuses the other's kind of value with a hint (exit 2).
    """
    if model and model_config:
        raise UsageError("give either --model or --model-config, not both")
    if model_config:
        return _from_spec_file(str(model_config), "--model-config")
    if not model:
        raise UsageError("--model NAME (see `webssl list-models`) or --model-config FILE is "
                         "required")
    p = Path(model).expanduser()
    if model.endswith(".json") or p.exists():
        try:   # a registry name that happens to be a file name here still means the model
            return _from_registry(model)
        except UsageError:
            pass
        what = ("for an architecture file use --model-config " + model if not p.is_dir()
                else "it is a folder; weights (an HF folder) go to --weights")
        raise UsageError(f"--model {model}: --model takes a registry name (see `webssl "
                         f"list-models`); {what}")
    return _from_registry(model)


def _from_spec_file(text: str, option: str) -> ModelChoice:
    p = Path(text).expanduser()
    if not p.exists() and not text.endswith(".json") and option == "--model-config":
        hint = ""
        try:
            hint = f"; {text!r} is a registry model: use --model {resolve(text).record.name}"
        except UsageError:
            pass
        raise UsageError(f"--model-config {text}: file not found (--model-config takes an "
                         f"architecture JSON file{hint})")
    return ModelChoice(ArchSpec.from_json_file(p, option), f"custom:{p.name}", None)


def _from_registry(text: str) -> ModelChoice:
    resolved = resolve(text)
    if resolved.notice:
        print(resolved.notice, file=sys.stderr)
    return ModelChoice(resolved.record.arch, resolved.record.name, resolved.record)


def init_random(model: WebSSLViT, seed: int = 0) -> None:
    """Deterministic random init (benchmarks and tests), generated on the model's device."""
    with torch.no_grad():
        gens: dict[torch.device, torch.Generator] = {}
        for name, p in model.named_parameters():
            if name.endswith(("ls1.gamma", "ls2.gamma")):
                p.fill_(0.1)
            elif name.endswith("bias"):
                p.zero_()
            elif ".norm" in name or name.startswith("norm"):
                p.fill_(1.0)
            else:
                g = gens.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
                p.normal_(0, 0.02, generator=g).clamp_(-0.04, 0.04)


def _materialize(model: nn.Module, device: torch.device, dtype: torch.dtype | None) -> None:
    model.to_empty(device=device)
    if dtype is not None:
        for name, p in model.named_parameters():
            if not name.endswith(FP32_SUFFIXES):
                p.data = p.data.to(dtype)


def check_weights(name_or_spec: str | Path | ArchSpec | dict[str, Any],
                  weights: str | Path) -> None:
    """Raise what :func:`create_model` would for ``weights`` that are no checkpoint or do not
    fit the model, without reading the tensors' data (``checkpoints.check_fits``)."""
    from ..checkpoints import check_fits
    choice = choose(name_or_spec)
    with torch.device("meta"):
        model = WebSSLViT(choice.spec)
    check_fits(model, weights, choice.name)


def create_model(name_or_spec: str | Path | ArchSpec | dict[str, Any], weights: str | Path | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 random_init: bool = False, attention: str = "auto", seed: int = 0,
                 offline: bool = False, source: str | None = None,
                 cache_dir: str | None = None) -> WebSSLViT:
    """Return a Web-SSL ViT in eval mode.

    ``weights``: a checkpoint file or HF folder (never touches the network). Without it, a
    registry model's weights come from the cache (downloaded unless ``offline``); random
    weights only when ``random_init=True`` is asked for explicitly. ``dtype`` (e.g.
    ``torch.bfloat16``) holds matmul weights in that dtype and keeps norms, LayerScale and
    embeddings in float32, so accuracy matches autocast.
    """
    choice = choose(name_or_spec)
    device = torch.device(device)
    with torch.device("meta"):
        model = WebSSLViT(choice.spec)
    model.model_name = choice.name
    model.load_report = None
    if weights is None and not random_init:
        if choice.record is None:
            raise UsageError("a custom architecture needs weights (--weights FILE) or an explicit "
                             "random init (random_init=True)")
        from ..weights import WeightsRequest, resolve_weights
        weights = resolve_weights(WeightsRequest(model=choice.record, source=source,
                                                 cache_dir=cache_dir, offline=offline))
    if weights is not None:
        report: LoadReport = load_weights(model, weights, choice.name, dtype=dtype, device=device)
        model.load_report = report
    else:
        _materialize(model, device, dtype)
        init_random(model, seed)
    model.set_attention_backend(attention)
    return model.eval().requires_grad_(False)


FFN_PAD_MULTIPLE = 256


def pad_ffn(model: WebSSLViT, multiple: int = FFN_PAD_MULTIPLE) -> int:
    """Pad every SwiGLU FFN's hidden size to a multiple of ``multiple`` with zero weights
    (same outputs, aligned GEMMs). Returns the new hidden size, or 0 when nothing changed
    (aligned already, or no SwiGLU FFN: Web-MAE's 4*D GELU MLPs are aligned). An
    inference-time change: the checkpoint, the spec and the FLOPs counted for MFU keep the
    original size."""
    from .ffn import SwiGLUFFN
    grown = 0
    for blk in model.blocks:
        if isinstance(blk.mlp, SwiGLUFFN):
            before = blk.mlp.w3.in_features
            after = blk.mlp.pad_hidden(multiple)
            grown = after if after != before else grown
    return grown


def want_pad_ffn(pad: bool | None, device: torch.device) -> bool:
    """--pad-ffn / --no-pad-ffn, default (None): on CUDA only, where it was measured faster."""
    return device.type == "cuda" if pad is None else pad


def compile_blocks(model: WebSSLViT, mode: str | None = None) -> None:
    """Regional compilation: every block shares one compiled graph, so a 32-block model
    compiles in about the time of one block; use fixed batch sizes to avoid recompiles.
    ``mode``: torch.compile's mode (None: the default)."""
    for blk in model.blocks:
        blk.compile(dynamic=False, mode=mode)


