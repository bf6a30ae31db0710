"""Decode and preprocess stage of ``webssl extract``: bytes -> uint8 (3, S, S) RGB tensors.

Runs in DataLoader workers (the runner sets ``worker_init_fn=worker_init``: 1 torch thread per
worker). Workers ship uint8; :func:`normalize` runs on the model's device. A bad sample raises
:class:`DecodeError` (``error_type``, ``message``), which the runner records in the failure ledger.
"""
from __future__ import annotations

import torch

from ..config import PreprocessConfig
from .decode import decode_image
from .errors import DecodeError
from .transforms import describe, normalize, preprocess, short_side_size
from .worker import worker_init

__all__ = ["DecodeError", "decode_image", "describe", "load_sample", "normalize", "preprocess",
           "short_side_size", "worker_init"]


def load_sample(data: bytes, cfg: PreprocessConfig) -> torch.Tensor:
    """decode_image + preprocess: encoded bytes -> uint8 (3, S, S). Raises DecodeError."""
    return preprocess(decode_image(data, cfg), cfg)
