"""Check an HF ``config.json`` against the architecture we are about to load into."""
from __future__ import annotations

from .errors import CheckpointMismatchError
from ..registry.spec import ArchSpec


def check_hf_config(config: dict, spec: ArchSpec, origin: str, model_name: str) -> None:
    expected = {
        "hidden_size": spec.embed_dim,
        "num_hidden_layers": spec.depth,
        "num_attention_heads": spec.num_heads,
        "patch_size": spec.patch_size,
    }
    problems = [f"{k}={config[k]!r} (expected {v})" for k, v in expected.items()
                if k in config and config[k] != v]
    eps = config.get("layer_norm_eps")
    if eps is None:
        problems.append(f"layer_norm_eps missing (transformers would default to 1e-12; "
                        f"these models need {spec.ln_eps})")
    elif abs(float(eps) - spec.ln_eps) > 1e-12:
        problems.append(f"layer_norm_eps={eps} (expected {spec.ln_eps})")
    mt = config.get("model_type")
    if spec.family == "dino":
        if mt not in (None, "dinov2"):
            problems.append(f"model_type={mt!r} (expected 'dinov2' for a Web-DINO model)")
        if config.get("use_swiglu_ffn") is False:
            problems.append("use_swiglu_ffn=false (Web-DINO uses a SwiGLU FFN)")
    else:
        if mt not in (None, "vit"):
            problems.append(f"model_type={mt!r} (expected 'vit' for a Web-MAE model; "
                            "ViTMAEModel shuffles tokens and is not supported)")
        if "intermediate_size" in config and config["intermediate_size"] != spec.ffn_hidden:
            problems.append(f"intermediate_size={config['intermediate_size']} "
                            f"(expected {spec.ffn_hidden})")
    if problems:
        raise CheckpointMismatchError(f"{origin}: config.json contradicts the architecture of "
                              f"{model_name}: " + "; ".join(problems))
