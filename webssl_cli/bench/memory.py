"""Will the benchmark fit? A closed-form memory estimate checked before the model is built.

A 7B model in fp32 needs about 26 GB for its weights alone; on a machine with less free RAM
the kernel's OOM killer ends the process silently, minutes later. :func:`bench_memory_need`
estimates what `webssl bench` will allocate (weights in the dtype they are held in, plus the
activations of one batch), :func:`available_bytes` reads what the device has free, and
:func:`check_fits` refuses (exit 2) when the need clearly exceeds it. Pure arithmetic apart
from :func:`available_bytes`; no tensor is allocated.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UsageError
from ..registry import ArchSpec, param_count
from ..registry.summary import human_bytes


@dataclass(frozen=True)
class MemoryNeed:
    weights: int          # bytes of the parameters, in the dtype they are held in
    activations: int      # bytes of the live activations of one batch (a lower estimate)
    bytes_per_param: int

    @property
    def total(self) -> int:
        return self.weights + self.activations


def bench_memory_need(spec: ArchSpec, resolution: int, batch: int, precision: str,
                      weights_dtype_bytes: int, attention_matrix: bool) -> MemoryNeed:
    """Bytes `webssl bench` allocates for ``spec``: every parameter at ``weights_dtype_bytes``
    (2 when held in bf16, 4 in fp32), plus one block's live activations for ``batch`` images:
    the residual stream, the fused qkv, the FFN hidden (twice for SwiGLU) and, where attention
    is not fused (``attention_matrix``: the CPU math path), the B x heads x T x T scores."""
    act = 2 if precision in ("bf16", "fp16") else 4
    tokens = (resolution // spec.patch_size) ** 2 + 1
    d, hidden = spec.embed_dim, spec.ffn_hidden * (2 if spec.ffn == "swiglu" else 1)
    per_token = 2 * d + 3 * d + hidden
    activations = batch * tokens * per_token * act
    if attention_matrix:
        activations += batch * spec.num_heads * tokens * tokens * act
    return MemoryNeed(param_count(spec) * weights_dtype_bytes, activations, weights_dtype_bytes)


def check_fits(need: MemoryNeed, available: int | None, *, model: str, where: str,
               advice: str) -> None:
    """Raise UsageError (exit 2) naming the need and what is available when ``need`` exceeds
    ``available``; nothing when it fits or when ``available`` is unknown (None)."""
    if available is None or need.total <= available:
        return
    raise UsageError(
        f"{model} does not fit in the memory available on {where}: it needs about "
        f"{human_bytes(need.total)} ({human_bytes(need.weights)} of weights at "
        f"{need.bytes_per_param} bytes per parameter + {human_bytes(need.activations)} of "
        f"activations for one batch), {human_bytes(available)} is available. {advice}")


def host_available_bytes() -> int | None:
    """Free host RAM: psutil's ``available`` if installed, else /proc/meminfo MemAvailable,
    capped by a cgroup v2 memory limit (a container); None when unknown."""
    avail: int | None = None
    try:
        import psutil   # optional
        avail = int(psutil.virtual_memory().available)
    except ImportError:
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            avail = None
    limit = _cgroup_room()
    if limit is not None:
        avail = limit if avail is None else min(avail, limit)
    return avail


def _cgroup_room() -> int | None:
    base = "/sys/fs/cgroup"
    try:
        with open(os.path.join(base, "memory.max")) as f:
            text = f.read().strip()
        if text == "max":
            return None
        with open(os.path.join(base, "memory.current")) as f:
            current = int(f.read().strip())
        return max(int(text) - current, 0)
    except (OSError, ValueError):
        return None


def available_bytes(device) -> int | None:
    """Free memory of ``device`` (a torch.device): CUDA's free bytes, or free host RAM."""
    if device.type == "cuda":
        import torch
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except RuntimeError:
            return None
    return host_available_bytes()
