"""Per-process setup for DataLoader workers that decode and preprocess.

The runner passes :func:`worker_init` as ``worker_init_fn``: one torch thread per worker, so
N workers use N cores instead of N x (all cores) threads fighting each other.
"""
from __future__ import annotations

import torch


def worker_init(worker_id: int = 0) -> None:   # noqa: ARG001 - DataLoader's signature
    """Set this process's torch intra-op threads to 1 (decode/resize run one image per core)."""
    torch.set_num_threads(1)
