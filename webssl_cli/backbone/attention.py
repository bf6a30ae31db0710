"""Multi-head self-attention with a fused qkv projection, rows ordered [q | k | v].

Attention goes through ``F.scaled_dot_product_attention`` (FlashAttention / cuDNN /
memory-efficient / math, whichever torch picks or the backend forced with
:func:`attention_backend`). ``xformers`` is an optional backend that fails loudly when it
cannot be loaded.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

BACKENDS = ("auto", "flash", "efficient", "cudnn", "math", "xformers")


def check_backend_name(backend: str) -> None:
    if backend not in BACKENDS:
        raise UsageError(f"--attention must be one of {', '.join(BACKENDS)}, got {backend!r}")


def check_backend_runs(backend: str, device: torch.device, dtype: torch.dtype,
                       head_dim: int) -> None:
    """Refuse, before any work, a forced SDPA kernel that cannot run on this device with these
    attention inputs: one tiny attention call with the run's head size and dtype (under
    autocast bf16/fp16, else float32). Without it every batch fails with torch's "No viable
    backend" (the efficient and cuDNN kernels on a CPU; FlashAttention and cuDNN with float32
    on CUDA, which takes them in fp16/bf16 only). A name that is no backend is refused too."""
    check_backend_name(backend)
    if backend in ("auto", "math", "xformers"):
        return
    q = torch.zeros(1, 1, 16, head_dim, device=device, dtype=dtype)
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        try:
            with sdpa_backend(backend):
                F.scaled_dot_product_attention(q, q, q)
            return
        except RuntimeError as exc:
            reasons = [" ".join(str(w.message).split()) for w in told] or [str(exc)]
    why = "; ".join(reasons)[:400].rstrip(".")
    name = str(dtype).replace("torch.", "")
    hint = ", or --precision bf16" if dtype == torch.float32 and device.type == "cuda" else ""
    raise UsageError(f"--attention {backend} cannot run on {device.type} with {name} attention "
                     f"inputs (head size {head_dim}); torch: {why}. Use --attention auto "
                     f"(torch picks a kernel that can){hint}")


def _xformers_attention():
    try:
        from xformers.ops import memory_efficient_attention  # type: ignore
    except Exception as exc:  # ImportError, or a binary built for another torch
        raise UsageError(
            f"--attention xformers: xformers cannot be loaded ({type(exc).__name__}: {exc}). "
            "Install a build matching your torch (`pip install webssl-cli[xformers]`) or use "
            "--attention auto, which uses torch's scaled_dot_product_attention "
            "(FlashAttention/cuDNN on GPU).") from None
    return memory_efficient_attention


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=True)
        self.backend = "auto"
        self._xops = None

    def set_backend(self, backend: str) -> None:
        check_backend_name(backend)
        self._xops = _xformers_attention() if backend == "xformers" else None
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        if self._xops is not None:   # xformers wants (B, N, H, hd)
            q, k, v = qkv.unbind(2)
            out = self._xops(q, k, v).reshape(b, n, c)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)   # (B, H, N, hd) each
            with sdpa_backend(self.backend):
                out = F.scaled_dot_product_attention(q, k, v)
            out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


@contextlib.contextmanager
def sdpa_backend(name: str) -> Iterator[None]:
    """Force one SDPA kernel ('flash', 'efficient', 'cudnn', 'math'); 'auto' lets torch pick."""
    if name in ("auto", "xformers"):
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel
    kernel = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
              "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]
    with sdpa_kernel(kernel):
        yield
