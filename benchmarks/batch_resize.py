"""`--decode gpu`'s resize/crop step: per-image ``preprocess`` vs ``batch_resize`` (two batched
matmuls per chunk), on batches of 256 decoded images of mixed sizes, one CPU thread.

    PYTHONPATH=. python benchmarks/batch_resize.py

Two cases, each timed in the same run (interleaved, best of 3):
* tiny images (16-28 px): little arithmetic, so mostly the host cost per batch, Python plus
  op dispatch. On a GPU that host time is what holds the GIL against the model's thread (the
  kernels themselves run asynchronously). The aten ops per image count the dispatches (each
  one a kernel launch or more on a GPU; views not counted), the same on any device.
* 256x256 images for a 224 model (img2dataset's output): already at the resize size, so only
  cropped; the batched path crops them all in one copy.
* web-size images (400-900 x 300-700): the arithmetic too. On a CPU the dense matmuls do far
  more multiply-adds than the banded antialias kernel, so expect the batched path to lose here;
  on a GPU they take a few ms per batch of 256 (fp32), measured by gpu_check's ``decode``
  section.

On a CPU tensor ``preprocess`` runs torchvision's native uint8 kernel (1-2 kernels per image);
on a GPU it runs to-float, interpolate, clamp, round, to-uint8 and a copy (about 6), so the
kernel counts here understate what the per-image path launches on a GPU.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from webssl_cli.config import PreprocessConfig
from webssl_cli.preprocess import preprocess
from webssl_cli.preprocess.batch_resize import resize_crop_batch
from webssl_cli.preprocess.transforms import plan_resize


def best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class OpCount(TorchDispatchMode):
    """Counts the aten ops dispatched that are not views (on a GPU: the kernel launches)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += not func.is_view
        return func(*args, **(kwargs or {}))


def ops(fn) -> int:
    with OpCount() as c:
        fn()
    return c.n


def case(label: str, sizes: list[tuple[int, int]], cfg: PreprocessConfig) -> None:
    imgs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in sizes]
    plans = [plan_resize(h, w, cfg) for h, w in sizes]
    calls = {"per-image": lambda: [preprocess(im, cfg) for im in imgs],
             "batched": lambda: resize_crop_batch(imgs, plans)}
    secs = {k: best_of(fn) for k, fn in calls.items()}
    n = len(imgs)
    print(f"{label:<36} " + "   ".join(
        f"{k} {secs[k] * 1e3 / n:7.3f} ms/img, {ops(fn) / n:5.2f} kernels/img"
        for k, fn in calls.items()) + f"   batched = {secs['per-image'] / secs['batched']:5.2f}x")


def main() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = 256
    print(f"torch {torch.__version__}, 1 thread, batches of {n} mixed-size images")
    case("tiny (host cost: Python + dispatch)",
         [(int(rng.integers(16, 28)), int(rng.integers(16, 28))) for _ in range(n)],
         PreprocessConfig(14))
    case("256x256 -> 224 (crop only)",
         [(256, 256)] * n, PreprocessConfig(224))
    case("web-size -> 224 (with arithmetic)",
         [(int(rng.integers(300, 700)), int(rng.integers(400, 900))) for _ in range(n)],
         PreprocessConfig(224))


if __name__ == "__main__":
    main()
