"""`--decode gpu`'s resize/crop step: per-image ``preprocess`` vs ``batch_resize`` (two batched
matmuls per chunk), on batches of 256 decoded images of mixed sizes, one CPU thread.

    PYTHONPATH=. python benchmarks/batch_resize.py

Two cases, each timed in the same run (interleaved, best of 3):
* tiny images (16-28 px): the arithmetic is negligible, so this is the host cost per batch,
  Python plus op dispatch. On a GPU that host time is what holds the GIL against the model's
  thread (the kernels themselves run asynchronously).
* web-size images (400-900 x 300-700): the arithmetic too. On a CPU the dense matmuls do far
  more multiply-adds than the banded antialias kernel, so expect the batched path to lose here;
  on a GPU they take ~2 ms per batch of 256 (fp32), measured by gpu_check's ``decode`` section.
"""
from __future__ import annotations

import time

import numpy as np
import torch

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


def case(label: str, sizes: list[tuple[int, int]], cfg: PreprocessConfig) -> None:
    imgs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in sizes]
    plans = [plan_resize(h, w, cfg) for h, w in sizes]
    one = best_of(lambda: [preprocess(im, cfg) for im in imgs])
    batched = best_of(lambda: resize_crop_batch(imgs, plans))
    n = len(imgs)
    print(f"{label:<34} per-image {one * 1e3 / n:7.3f} ms/img   batched "
          f"{batched * 1e3 / n:7.3f} ms/img   batched = {one / batched:5.2f}x per-image")


def main() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = 256
    print(f"torch {torch.__version__}, 1 thread, batches of {n} mixed-size images")
    case("tiny (host cost: Python + dispatch)",
         [(int(rng.integers(16, 28)), int(rng.integers(16, 28))) for _ in range(n)],
         PreprocessConfig(14))
    case("web-size -> 224 (with arithmetic)",
         [(int(rng.integers(300, 700)), int(rng.integers(400, 900))) for _ in range(n)],
         PreprocessConfig(224))


if __name__ == "__main__":
    main()
