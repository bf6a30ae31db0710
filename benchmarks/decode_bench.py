"""Decode + preprocess throughput on one core: our path vs the seed's PIL + HF processor.

Makes real-size JPEGs (500x375 .. 1024x768, from ``examples/images`` resized, plus noise, quality
90) and times, with ``torch.set_num_threads(1)``:

* ours: ``webssl_cli.preprocess.load_sample`` (torchvision decode_jpeg + uint8 bicubic resize +
  center crop -> uint8; normalization runs later on the model device), and the same plus a CPU
  ``normalize`` for a like-for-like float output;
* seed: ``PIL.Image.open(...).convert("RGB")`` + transformers' ``BitImageProcessorPil``
  (numpy/PIL backend, the transformers 4.x default) with the README sizes (shortest edge 256,
  crop 224, bicubic, ImageNet mean/std), and the same with ``BitImageProcessor`` (the
  torchvision backend, transformers 5's default). Both built locally, no download.

Run: ``python -m benchmarks.decode_bench [n_images]``. Nothing is asserted.
"""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from webssl_cli.config import PreprocessConfig
from webssl_cli.preprocess import load_sample, normalize

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
SIZES = ((500, 375), (640, 480), (800, 600), (1024, 768), (768, 1024), (375, 500))
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


BIG_SIZES = ((1280, 960), (1600, 1200), (2048, 1536), (1200, 1600), (3000, 2000), (4000, 3000))


def make_jpegs(n_images: int, seed: int = 0, sizes=SIZES) -> list[bytes]:
    """``n_images`` JPEG byte strings of real-photo sizes (examples resized + Gaussian noise)."""
    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.glob("*.jpg"))]
    out = []
    for i in range(n_images):
        w, h = sizes[i % len(sizes)]
        base = np.asarray(photos[i % len(photos)].resize((w, h), Image.BICUBIC), dtype=np.int16)
        noisy = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _rates(fns: dict[str, Callable[[bytes], object]], images: list[bytes],
           repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` images per CPU-second of each function (``time.process_time``: the
    CPU time of this process, one torch thread, so neighbours on a shared machine do not count);
    the functions take turns in every round."""
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn(images[0])   # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.process_time()
            for data in images:
                fn(data)
            best[name] = min(best[name], time.process_time() - t0)
    return {name: len(images) / t for name, t in best.items()}


def run(n_images: int = 60, repeats: int = 5, out: Callable[[str], None] = print) -> dict:
    """Measure and print images/s per core of each path; return the numbers and ratios."""
    try:   # transformers >= 5: PIL backend has its own class, the plain name is torchvision
        from transformers import BitImageProcessor, BitImageProcessorPil
    except ImportError:   # transformers 4.x: the plain class is PIL/numpy, "Fast" is torchvision
        from transformers import BitImageProcessor as BitImageProcessorPil
        from transformers import BitImageProcessorFast as BitImageProcessor

    torch.set_num_threads(1)
    images = make_jpegs(n_images)
    cfg = PreprocessConfig(resolution=224)
    kw = dict(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, resample=3,
              image_mean=MEAN, image_std=STD)
    hf_pil, hf_tv = BitImageProcessorPil(**kw), BitImageProcessor(**kw)

    def ours(data: bytes) -> torch.Tensor:
        return load_sample(data, cfg)

    def ours_normalized(data: bytes) -> torch.Tensor:
        return normalize(load_sample(data, cfg)[None], cfg)

    def seed_pil(data: bytes) -> object:
        return hf_pil(images=Image.open(io.BytesIO(data)).convert("RGB"), return_tensors="pt")

    def seed_tv(data: bytes) -> object:
        return hf_tv(images=Image.open(io.BytesIO(data)).convert("RGB"), return_tensors="pt")

    rates = _rates({"ours": ours, "ours+normalize": ours_normalized,
                    "seed PIL+BitImageProcessorPil": seed_pil,
                    "seed PIL+BitImageProcessor(torchvision)": seed_tv}, images, repeats)
    out(f"{n_images} JPEGs 500x375..1024x768, q90, 1 thread, resize-crop 256 -> 224 "
        "(images per CPU-second)")
    for name, rate in rates.items():
        out(f"  {name:42s} {rate:8.1f} images/s")
    ratios = {"vs_pil_processor": rates["ours"] / rates["seed PIL+BitImageProcessorPil"],
              "vs_torchvision_processor":
                  rates["ours"] / rates["seed PIL+BitImageProcessor(torchvision)"],
              "normalized_vs_pil_processor":
                  rates["ours+normalize"] / rates["seed PIL+BitImageProcessorPil"]}
    for name, ratio in ratios.items():
        out(f"  ratio {name:38s} {ratio:6.2f}x")
    return {"images_per_s": rates, "ratios": ratios, "n_images": n_images,
            "jpeg_draft": draft(max(6, n_images // 5), repeats, out)}


def draft(n_images: int, repeats: int, out: Callable[[str], None]) -> dict:
    """``--jpeg-draft`` vs the exact path on big photos (1280x960 .. 4000x3000): images per
    CPU-second and how far the 224x224 crops are from the exact ones (PSNR, mean |diff|)."""
    images = make_jpegs(n_images, seed=1, sizes=BIG_SIZES)
    exact, scaled = PreprocessConfig(224), PreprocessConfig(224, jpeg_draft=True)
    rates = _rates({"exact": lambda d: load_sample(d, exact),
                    "jpeg_draft": lambda d: load_sample(d, scaled)}, images, repeats)
    diffs = [(load_sample(d, exact).float() - load_sample(d, scaled).float()) for d in images]
    mse = float(np.mean([float((x ** 2).mean()) for x in diffs]))
    res = {"images_per_s": rates, "ratio": rates["jpeg_draft"] / rates["exact"],
           "psnr_db": 10 * np.log10(255 ** 2 / mse),
           "mean_abs_diff": float(np.mean([float(x.abs().mean()) for x in diffs])),
           "n_images": n_images}
    out(f"{n_images} JPEGs 1280x960..4000x3000: exact {rates['exact']:.1f} img/s, --jpeg-draft "
        f"{rates['jpeg_draft']:.1f} img/s ({res['ratio']:.2f}x); crops {res['psnr_db']:.1f} dB "
        f"PSNR, mean |diff| {res['mean_abs_diff']:.2f} levels")
    return res


if __name__ == "__main__":
    run(n_images=int(sys.argv[1]) if len(sys.argv) > 1 else 60)
