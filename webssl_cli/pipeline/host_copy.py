"""One batch's features on their way from the device to host memory.

The copy is queued on the device right behind the batch's own compute, into pinned buffers,
and an event marks its end. Waiting for it therefore waits for that batch only, never for
the batch queued after it: the device keeps computing while the host files the rows. (A
plain ``tensor.cpu()`` issued after the next batch was queued waits for both, and leaves the
device idle while the host does its per-batch work.)
"""
from __future__ import annotations

import numpy as np
import torch


class HostCopy:
    def __init__(self, feats: dict[str, torch.Tensor]) -> None:
        self.event = None
        if not any(v.is_cuda for v in feats.values()):
            self.host = feats
            return
        self.host = {}
        for k, v in feats.items():
            buf = torch.empty(v.shape, dtype=v.dtype, pin_memory=True)
            buf.copy_(v, non_blocking=True)
            self.host[k] = buf
        self.event = torch.cuda.Event()
        self.event.record()

    def wait(self) -> dict[str, np.ndarray]:
        """The features as numpy arrays, once the copy has landed: views of the pinned
        buffers, which ``assembler.split_rows`` copies per unit into ordinary memory (one
        copy in all), so the rows a unit holds until its write never pin host RAM."""
        if self.event is None:
            return {k: v.cpu().numpy() for k, v in self.host.items()}
        self.event.synchronize()
        return {k: v.numpy() for k, v in self.host.items()}
