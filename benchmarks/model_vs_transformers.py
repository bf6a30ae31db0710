"""Native backbone vs transformers on the same random weights, same dtype, ViT-L size, CPU.

* Web-DINO shape (dino300m-full2b-224: D 1024, depth 24, SwiGLU, LayerScale, patch 14) vs
  transformers' ``Dinov2Model``;
* Web-MAE shape (mae300m-full2b-224: D 1024, depth 24, GELU MLP, patch 16) vs ``ViTModel``.

transformers builds a random model from its config and ``save_pretrained``s it to a temp
folder; ours loads that folder through our HF converter (``create_model(name, weights=dir)``),
so both hold the very same weights (checked: max |CLS difference| is printed). Both take the
same normalized float batch and return final-normed tokens. fp32, and bf16 autocast with fp32
weights (how ``webssl extract`` runs on a CPU). In fp32 a profile also gives the share of time
both spend in matmul + attention kernels, which bounds what any implementation can gain
over theirs on this machine (measured: ~95%, so at most ~1.05x). Timing is interleaved (ours, theirs, ours, ...)
and best-of, so load from other processes hits both sides alike. Goal: ours/theirs >= 1.2.
Our fp32 weights loaded from a file of the same dtype stay memory-mapped (file pages, no
transparent huge pages); fp32 is also timed with the weights copied into RAM ("ours_ram").

Run: ``python -m benchmarks.model_vs_transformers``. Nothing is asserted.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.bench_util import best_of
from webssl_cli.registry import ArchSpec, resolve


def hf_model(a: ArchSpec, seed: int = 0):
    """A random transformers model with architecture ``a``: ``Dinov2Model`` for Web-DINO,
    ``ViTModel`` (no pooler) for Web-MAE. Our HF converter loads its ``save_pretrained``."""
    from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTModel
    torch.manual_seed(seed)
    common = dict(hidden_size=a.embed_dim, num_hidden_layers=a.depth,
                  num_attention_heads=a.num_heads, layer_norm_eps=a.ln_eps,
                  image_size=a.img_size, patch_size=a.patch_size, qkv_bias=a.qkv_bias)
    if a.family == "dino":
        return Dinov2Model(Dinov2Config(mlp_ratio=4, use_swiglu_ffn=True, layerscale_value=0.1,
                                        **common)).eval()
    return ViTModel(ViTConfig(intermediate_size=a.ffn_hidden, **common),
                    add_pooling_layer=False).eval()


def compare(name: str, batch: int, rounds: int, bf16_batch: int,
            bf16_rounds: int, out: Callable[[str], None]) -> dict[str, Any]:
    from webssl_cli.backbone.factory import create_model
    theirs = hf_model(resolve(name).record.arch)
    with tempfile.TemporaryDirectory(prefix="webssl-hf-") as d:
        theirs.save_pretrained(d)
        ours = create_model(name, weights=d)
        ours_ram = create_model(name, weights=d)
    for p in ours_ram.parameters():      # same weights, copied out of the file mapping
        p.data = p.data.clone()
    impl = getattr(theirs.config, "_attn_implementation", None)
    res: dict[str, Any] = {"model": name, "hf_class": type(theirs).__name__,
                           "hf_attention": impl, "runs": {}}
    g = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        x = torch.randn(1, 3, 224, 224, generator=g)
        a = ours.forward_features(x)["x_norm_clstoken"]
        b = theirs(pixel_values=x).last_hidden_state[:, 0]
        res["max_abs_cls_diff_fp32"] = float((a - b).abs().max())
    out(f"  {name}: same weights loaded, max |CLS ours - theirs| fp32 = "
        f"{res['max_abs_cls_diff_fp32']:.2e} (HF attention: {impl})")
    for precision, bs, r in (("fp32", batch, rounds), ("bf16", bf16_batch, bf16_rounds)):
        if r < 1:
            continue
        x = torch.randn(bs, 3, 224, 224, generator=g)
        half = precision == "bf16"

        def run_ours() -> None:
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=half):
                ours.forward_features(x)

        def run_theirs() -> None:
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=half):
                theirs(pixel_values=x)

        def run_ours_ram() -> None:
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=half):
                ours_ram.forward_features(x)

        fns = {"ours": run_ours, "theirs": run_theirs}
        if not half:   # fp32 weights stay memory-mapped from the file: also time them copied
            fns["ours_ram"] = run_ours_ram
        best = best_of(fns, rounds=r, warmup=1)
        ips = {k: bs / v for k, v in best.items()}
        ratio = ips["ours"] / ips["theirs"]
        res["runs"][precision] = {"batch": bs, "rounds": r, "ours_images_per_s": ips["ours"],
                                  "theirs_images_per_s": ips["theirs"], "ratio": ratio}
        extra = ""
        if "ours_ram" in ips:
            res["runs"][precision]["ours_ram_images_per_s"] = ips["ours_ram"]
            res["runs"][precision]["ratio_ram"] = ips["ours_ram"] / ips["theirs"]
            extra = (f"; ours with weights copied to RAM {ips['ours_ram']:.3f} img/s, "
                     f"ratio {ips['ours_ram'] / ips['theirs']:.2f}x")
        out(f"  {name} {precision} batch {bs}: ours {ips['ours']:.3f} img/s, "
            f"{res['hf_class']} {ips['theirs']:.3f} img/s, ratio {ratio:.2f}x{extra}")
        if not half:
            shares = {k: shared_kernel_share(f) for k, f in (("ours", run_ours_ram),
                                                             ("theirs", run_theirs))}
            res["runs"][precision]["shared_kernel_share"] = shares
            res["runs"][precision]["ceiling"] = 1 / shares["theirs"]
            out(f"  {name} {precision}: time in matmul + attention kernels: ours "
                f"{100 * shares['ours']:.1f}%, theirs {100 * shares['theirs']:.1f}%: removing "
                f"everything else from theirs could gain at most {1 / shares['theirs']:.2f}x")
    return res


SHARED_KERNELS = ("addmm", "mm", "bmm", "matmul", "linear", "scaled_dot_product", "attention")


def shared_kernel_share(fn: Callable[[], None]) -> float:
    """Fraction of CPU self time spent in matmul and attention kernels, the work both
    implementations must do; the rest (norms, activations, copies) is what ours could save."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shared = sum(e.self_cpu_time_total for e in events
                 if any(k in e.key for k in SHARED_KERNELS))
    return shared / max(total, 1e-9)


def run(batch: int = 2, rounds: int = 2, bf16_batch: int = 1, bf16_rounds: int = 1,
        families: tuple[str, ...] = ("dino", "mae"),
        out: Callable[[str], None] = print) -> dict[str, Any]:
    """Ratios ours/theirs (images/s) per family and precision."""
    names = {"dino": "dino300m-full2b-224", "mae": "mae300m-full2b-224"}
    out(f"model vs transformers (torch threads: {torch.get_num_threads()})")
    results = {fam: compare(names[fam], batch, rounds, bf16_batch, bf16_rounds, out)
               for fam in families}
    return {"results": results, "batch": batch, "rounds": rounds, "bf16_batch": bf16_batch,
            "bf16_rounds": bf16_rounds}


if __name__ == "__main__":
    run()
