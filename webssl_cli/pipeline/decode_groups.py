"""`--decode gpu`: the batched nvJPEG calls for one batch of raw JPEGs (used by gpu_decode).

* Groups: a batch is decoded in groups of consecutive images whose decoded size (width *
  height * 3 bytes, read from each JPEG's frame header) stays under a cap, so the decoded
  full-size images of only one group need to be alive at once (gpu_decode resizes each group
  before decoding the next).
* Bisection: when a batched call fails (one image nvJPEG rejects, or out of memory), the list
  is split in halves and each half decoded batched, recursively; an image that fails alone is
  left to the caller's per-image fallback. One bad image costs about 2*log2(B) calls instead
  of sending the whole batch down the per-image path.
"""
from __future__ import annotations

import torch

# Decoded bytes per group of one batched nvJPEG call (width * height * 3 each). 256 photos of
# 24 MP would otherwise hold 18 GB of decoded pixels until the batch's resize is done; 1 GiB
# still takes a few hundred typical web images (~0.5 MP) in one call. An image larger than
# the cap is a group on its own (gpu_decode.route_to_gpu keeps those below 36 MP).
DECODE_GROUP_BYTES = 1 << 30
_HEADER_PREFIX = 1 << 16     # bytes read for the frame header before falling back to all


def decoded_bytes(raw: torch.Tensor) -> int:
    """width * height * 3 from the JPEG's frame header; 0 when none is found (the decoder
    reports such a file). Reads the first 64 KiB, and the whole file only when the header
    lies past them (large APP segments), so a tensor is copied at most once in full."""
    from ..preprocess.sniff import jpeg_frame
    arr = raw.numpy()
    frame = jpeg_frame(arr[:_HEADER_PREFIX].tobytes())
    if frame is None and arr.size > _HEADER_PREFIX:
        frame = jpeg_frame(arr.tobytes())
    return 0 if frame is None else frame.width * frame.height * 3


def plan_groups(raws: list[torch.Tensor], cap: int = DECODE_GROUP_BYTES,
                sizes: list[int] | None = None) -> list[list[int]]:
    """Positions of ``raws`` cut, in order, into runs of at most ``cap`` decoded bytes (an
    image above the cap alone). ``sizes``: the decoded bytes the workers found (their
    headers are then not parsed again here, on the decode thread: about 25 us per image)."""
    if sizes is None or len(sizes) != len(raws):
        sizes = [decoded_bytes(raw) for raw in raws]
    groups: list[list[int]] = []
    total = 0
    for i, size in enumerate(sizes):
        if not groups or total + size > cap:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += size
    return groups


def settle_stream(device: torch.device) -> None:
    """Wait for the calling stream's queued work before an nvJPEG call. torchvision decodes on
    an internal stream into tensors allocated on the caller's stream, and that internal stream
    does not wait for the caller's: memory freed by our earlier (still queued) resize kernels
    could be handed to the decoder and overwritten under them. The main thread no longer syncs
    on every batch, so this stream can run far behind the host. Without this wait an H100 run
    had a few rows with cosine < 0 against CPU decoding; with it, the minimum over 16,000
    images was 0.99982 on an H100 and an H200 (benchmarks/README.md, 2026-11-27)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def free_device_memory(device: torch.device) -> None:
    """After an out-of-memory error: hand the allocator's cached blocks back (CUDA only).
    Call it outside the ``except`` block, whose traceback still holds the failed call's
    tensors."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def decode_split(raws: list[torch.Tensor], positions: list[int], device: torch.device,
                 decoded: dict[int, torch.Tensor], left: list[tuple[int, bool]]) -> None:
    """Decode ``raws[positions]`` in one batched call into ``decoded`` (position -> uint8
    (3, h, w)); if the call fails, each half the same way. A single image whose call failed
    goes to ``left`` as (position, out_of_memory) for the per-image fallback."""
    from torchvision.io import ImageReadMode, decode_jpeg
    oom = False
    try:
        settle_stream(device)
        images = decode_jpeg([raws[i] for i in positions], mode=ImageReadMode.RGB,
                             device=device)
    except RuntimeError as exc:          # a file nvJPEG rejects, or torch.OutOfMemoryError
        oom = isinstance(exc, torch.OutOfMemoryError)
        images = None
    if images is not None:
        decoded.update(zip(positions, images))
        return
    if oom:
        free_device_memory(device)
    if len(positions) == 1:
        left.append((positions[0], oom))
        return
    half = len(positions) // 2
    decode_split(raws, positions[:half], device, decoded, left)
    decode_split(raws, positions[half:], device, decoded, left)
