"""Timing helpers of the GPU check scripts: device sync and images/s of a repeated call."""
from __future__ import annotations

import time

import torch


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_call(fn, bs: int, dev: torch.device, seconds: float = 2.0) -> float:
    """Images/s of ``fn`` (one batch of ``bs`` per call), after 3 warm-up calls."""
    for _ in range(3):
        fn()
    sync(dev)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if n >= 3:
            sync(dev)
            if time.perf_counter() - t0 >= seconds:
                break
    return n * bs / (time.perf_counter() - t0)
