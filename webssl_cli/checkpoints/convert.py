"""Pure key-conversion functions: any published layout -> our (official, unchunked) names."""
from __future__ import annotations

import re
from typing import Any

import torch

from ..errors import CheckpointError

_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.(.*)$")
HEAD_PREFIXES = ("dino_head.", "ibot_head.")


def unwrap(obj: dict[str, Any], origin: str) -> dict[str, torch.Tensor]:
    """Take the backbone out of wrapped checkpoints (teacher/model/state_dict wrappers)."""
    if "teacher" in obj and isinstance(obj["teacher"], dict):
        teacher = obj["teacher"]
        backbone = {k[len("backbone."):]: v for k, v in teacher.items() if k.startswith("backbone.")}
        rest = [k for k in teacher if not k.startswith("backbone.") and not k.startswith(HEAD_PREFIXES)]
        if not backbone:
            raise CheckpointError(f"{origin}: a teacher checkpoint without any 'backbone.*' keys")
        if rest:
            raise CheckpointError(f"{origin}: teacher checkpoint has unexpected keys outside "
                                  f"backbone/dino_head/ibot_head: {rest[:5]}")
        return backbone
    for wrapper in ("model", "state_dict"):
        if wrapper in obj and isinstance(obj[wrapper], dict) and not torch.is_tensor(obj[wrapper]):
            return unwrap(obj[wrapper], origin)
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{origin}: entries that are not tensors: {bad[:5]}")
    return obj


def dechunk(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``blocks.<chunk>.<i>.rest`` -> ``blocks.<i>.rest`` (i is the global index; any chunk count)."""
    out = {}
    for k, v in sd.items():
        m = _CHUNKED.match(k)
        out[f"blocks.{m.group(1)}.{m.group(2)}" if m else k] = v
    return out


def strip_prefix(sd: dict[str, torch.Tensor], prefixes=("dinov2.", "vit.", "model.")) -> dict[str, torch.Tensor]:
    for p in prefixes:
        if sd and all(k.startswith(p) for k in sd if not k.startswith("pooler.")):
            return {(k[len(p):] if k.startswith(p) else k): v for k, v in sd.items()}
    return sd


_HF_COMMON = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)$", r"blocks.\1.attn.proj.\2"),
    (r"^layernorm\.(weight|bias)$", r"norm.\1"),
]
_HF_DINO = [
    (r"^encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)$", r"blocks.\1.norm\2.\3"),
    (r"^encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_in\.(weight|bias)$", r"blocks.\1.mlp.w12.\2"),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_out\.(weight|bias)$", r"blocks.\1.mlp.w3.\2"),
]
_HF_VIT = [
    (r"^encoder\.layer\.(\d+)\.layernorm_before\.(weight|bias)$", r"blocks.\1.norm1.\2"),
    (r"^encoder\.layer\.(\d+)\.layernorm_after\.(weight|bias)$", r"blocks.\1.norm2.\2"),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)$", r"blocks.\1.mlp.fc1.\2"),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)$", r"blocks.\1.mlp.fc2.\2"),
]
_HF_QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$")


def from_hf(sd: dict[str, torch.Tensor], family: str, origin: str) -> dict[str, torch.Tensor]:
    """transformers 4.x on-disk names (Dinov2Model / ViTModel) -> ours; fuses q, k, v rows."""
    sd = strip_prefix(sd)
    rules = [(re.compile(a), b) for a, b in _HF_COMMON + (_HF_DINO if family == "dino" else _HF_VIT)]
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k.startswith("pooler."):      # HF ViT's tanh pooler: never a feature
            continue
        m = _HF_QKV.match(k)
        if m:
            qkv.setdefault((int(m.group(1)), m.group(3)), {})[m.group(2)] = v
            continue
        for pat, repl in rules:
            if pat.match(k):
                out[pat.sub(repl, k)] = v
                break
        else:
            out[k] = v                    # left as is: reported as unexpected by the matcher
    for (layer, kind), parts in sorted(qkv.items()):
        missing = [p for p in ("query", "key", "value") if p not in parts]
        if missing:
            raise CheckpointError(f"{origin}: layer {layer} has no attention {'/'.join(missing)} "
                                  f"{kind}; the checkpoint is incomplete")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def looks_like_hf(sd: dict[str, Any]) -> bool:
    return any(k.startswith(("embeddings.", "encoder.layer.", "dinov2.embeddings", "vit.embeddings"))
               for k in sd)
