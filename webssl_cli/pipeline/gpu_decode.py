"""`--decode gpu`: batched JPEG decoding (nvJPEG via torchvision) and resize/crop on the GPU.

Workers only read bytes and route each sample (``gpu_route``): a plain, complete baseline
JPEG (one clean scan, self-consistent headers, size within the bomb limit and the GPU's pixel
cap, YCbCr or grey, no EXIF rotation) travels as raw bytes, up to its end-of-image marker;
anything else (progressive JPEGs included), and the share the workers keep for themselves
(``decode_share``), is decoded on the CPU in the worker as usual.

On the GPU a batch is decoded in groups whose decoded size stays under ``DECODE_GROUP_BYTES``
(``decode_groups``), one batched call per group, and each group is resized and cropped
(``preprocess.batch_resize``) before the next is decoded, so the full-size images of only one
group are alive at once. If a batched call fails, its list is split in halves and each half
decoded batched, recursively; an image that fails alone is retried alone on the GPU and then
on the CPU, so an image the GPU cannot decode is still decoded or recorded as a failure, never
dropped. Those fallbacks are counted (``DeviceImages.fallbacks``): they are slower.

Out of device memory is never a per-image failure: the cache is freed and the work retried
smaller (a batched decode split in halves, one image decoded on the CPU instead, a batched
resize done per image); if one image alone still runs out, the error propagates and the run
stops, naming the sample.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import torch

from ..config import PreprocessConfig
from ..errors import WebsslError
from ..preprocess.batch_resize import CHUNK_PIXELS, resize_crop_batch
from ..preprocess.transforms import ResizePlan, plan_resize
from .decode_groups import (DECODE_GROUP_BYTES, decode_split, free_device_memory, plan_groups,
                            settle_stream)

log = logging.getLogger("webssl.decode")

# Larger JPEGs go to the CPU workers. One 36 MP image is ~108 MB decoded, plus nvJPEG's
# planar buffers and ~430 MB of float32 in its resize (alone in its chunk): fine next to the
# model, but the bomb limit (179 MP) is 5x that, and such rare giants would leave the decode
# thread's peak memory, which shares the GPU with the model, without a useful bound.
GPU_DECODE_MAX_PIXELS = 36_000_000


def route_to_gpu(data: bytes, pcfg: PreprocessConfig,
                 max_pixels: int = GPU_DECODE_MAX_PIXELS) -> bool:
    """True for JPEGs the GPU path can take as they are (:func:`gpu_route`)."""
    return gpu_route(data, pcfg, max_pixels)[0] > 0


def gpu_decoded_bytes(data: bytes, pcfg: PreprocessConfig,
                      max_pixels: int = GPU_DECODE_MAX_PIXELS) -> int:
    """:func:`gpu_route`'s decoded size: 0 for a file the CPU decodes."""
    return gpu_route(data, pcfg, max_pixels)[0]


_check_failed_said = False


def gpu_route(data: bytes, pcfg: PreprocessConfig,
              max_pixels: int = GPU_DECODE_MAX_PIXELS) -> tuple[int, int]:
    """(decoded bytes, length) for a JPEG the GPU path can take: its decoded size (width *
    height * 3 bytes, which the decode groups are cut by) and the bytes to give nvJPEG (up
    to the EOI: what phones and Multi-Picture files append after it is not the image, and
    decoders stop there); (0, 0) for anything else, which the worker decodes on the CPU.
    GPU JPEGs are complete baseline JPEGs of at most ``max_pixels`` (larger ones go to the
    CPU too: bounded decode-thread memory). Runs in the workers, so the decode thread parses
    no headers.

    Progressive (and other non-baseline) JPEGs go to the CPU workers: nvJPEG's batched
    hardware decoder (A100/H100) takes baseline files only, and torchvision decodes the rest
    one at a time, Huffman-decoding on the decode thread with a stream sync per image.

    So do JPEGs whose entropy-coded data is not one clean scan ending at an EOI (a stray
    marker in the scan data, a second scan, fill bytes, a missing EOI), whose headers are not
    self-consistent (a DHT or DQT that does not parse exactly, an SOS naming an undefined
    Huffman table or other components than the frame's, ...), or that are RGB-coded
    (``preprocess.jpeg_gpu_check``): nvJPEG decoded a corrupt file silently into garbage
    pixels on an H100 and an H200 (2026-11-27), where libjpeg on the CPU reports it
    (``CorruptImage``), so the CPU path judges them."""
    from PIL import Image

    from ..preprocess.jpeg_gpu_check import jpeg_gpu_check
    from ..preprocess.transforms import draft_request
    global _check_failed_said
    try:
        frame, problem, length = jpeg_gpu_check(data)
    except Exception as exc:  # a parse this check got wrong must not end the shard: the
        if not _check_failed_said:   # CPU decode judges the file; said once per worker
            _check_failed_said = True
            log.warning("the --decode gpu JPEG check failed (%s: %s); such files decode on "
                        "the CPU. Please report it", type(exc).__name__, str(exc)[:200])
        return 0, 0
    if problem is not None:
        return 0, 0           # not a JPEG, not baseline, truncated, corrupt headers or scan:
                              # the CPU path decodes it or names what nvJPEG may hide
    if frame.width * frame.height > min(pcfg.max_image_pixels, max_pixels):
        return 0, 0           # past the bomb limit the CPU path produces the precise error
    if draft_request(frame.width, frame.height, pcfg) is not None:
        return 0, 0           # --jpeg-draft: the worker's DCT-scaled decode, as --decode cpu
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode != "RGB" and im.mode != "L":   # CMYK / YCCK: CPU
                return 0, 0
            if im.getexif().get(0x0112, 1) != 1:
                return 0, 0
    except Exception:
        return 0, 0
    return frame.width * frame.height * 3, length


@dataclass
class DeviceImages:
    images: torch.Tensor | None          # (n, 3, S, S) uint8 on the device, rows of ``ok``
    ok: list[int]                        # positions decoded, ascending
    bad: dict[int, tuple[str, str]]      # position -> (error_type, message)
    fallbacks: int = 0                   # images that took the per-image (GPU alone/CPU) path


def decode_on_gpu(raws: list[torch.Tensor], pcfg: PreprocessConfig, device: torch.device,
                  chunk_pixels: int = CHUNK_PIXELS, batched: bool = True):
    """Decode + preprocess raw JPEG byte tensors. Returns (images (n,3,S,S) uint8 on device,
    ok positions, {position: (error_type, message)}): :func:`decode_raw_batch` as a tuple."""
    r = decode_raw_batch(raws, pcfg, device, chunk_pixels, batched)
    return r.images, r.ok, r.bad


def decode_raw_batch(raws: list[torch.Tensor], pcfg: PreprocessConfig, device: torch.device,
                     chunk_pixels: int = CHUNK_PIXELS, batched: bool = True,
                     group_bytes: int = DECODE_GROUP_BYTES,
                     names: list[str] | None = None,
                     sizes: list[int] | None = None) -> DeviceImages:
    """Decode + preprocess raw JPEG byte tensors, group by group (``group_bytes`` decoded
    bytes at most per batched call; see the module docstring). ``names`` (the samples' keys)
    only go into the message of an out-of-memory error; ``sizes``: each JPEG's decoded bytes
    as the workers found them (:func:`gpu_decoded_bytes`), else read from the headers here.

    Each group's images are resized and cropped together (``preprocess.batch_resize``: two
    batched matmuls per chunk of at most ``chunk_pixels`` padded pixels), not one call per
    image: on a GPU, ``preprocess`` launches about six kernels per image from Python, holding
    the GIL against the model's thread. ``batched=False`` is that per-image path (kept for
    benchmarks/gpu_check.py's comparison)."""
    done: dict[int, torch.Tensor] = {}                   # position -> (3,S,S)
    bad: dict[int, tuple[str, str]] = {}
    fallbacks = 0
    for group in plan_groups(raws, group_bytes, sizes):
        fallbacks += _decode_group(raws, group, pcfg, device, chunk_pixels, batched, done, bad,
                                   names)
    ok = sorted(done)
    images = torch.stack([done[i] for i in ok]) if ok else None
    return DeviceImages(images, ok, bad, fallbacks)


def _decode_group(raws: list[torch.Tensor], group: list[int], pcfg: PreprocessConfig,
                  device: torch.device, chunk_pixels: int, batched: bool,
                  done: dict[int, torch.Tensor], bad: dict[int, tuple[str, str]],
                  names: list[str] | None) -> int:
    """Decode and resize one group into ``done``/``bad``; its full-size images die on return.
    Returns how many images took the per-image fallback."""
    decoded: dict[int, torch.Tensor] = {}               # position -> full-size (3,h,w)
    left: list[tuple[int, bool]] = []
    decode_split(raws, group, device, decoded, left)
    _decode_alone(raws, left, pcfg, device, decoded, done, bad, names)
    todo: list[tuple[int, torch.Tensor, ResizePlan]] = []
    for i in sorted(decoded):
        img = decoded.pop(i)
        try:
            todo.append((i, img, plan_resize(int(img.shape[-2]), int(img.shape[-1]), pcfg)))
        except Exception as exc:          # decided by the size (ExtremeAspectRatio)
            _record(bad, i, exc, names)
    _resize_all(todo, pcfg, chunk_pixels, batched, done, bad, names)
    return len(left)


def _decode_alone(raws: list[torch.Tensor], left: list[tuple[int, bool]],
                  pcfg: PreprocessConfig, device: torch.device, decoded: dict[int, torch.Tensor],
                  done: dict[int, torch.Tensor], bad: dict[int, tuple[str, str]],
                  names: list[str] | None) -> None:
    """The per-image fallback for the images the batched calls left: alone on the GPU (not
    after it ran out of memory), then on the CPU (``load_sample``, moved to the device)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    from ..preprocess import load_sample
    for i, oom in left:
        if not oom:
            try:
                settle_stream(device)
                decoded[i] = decode_jpeg(raws[i], mode=ImageReadMode.RGB, device=device)
                continue
            except RuntimeError as exc:
                oom = isinstance(exc, torch.OutOfMemoryError)
        if oom:
            free_device_memory(device)
        try:
            done[i] = load_sample(raws[i].numpy().tobytes(), pcfg).to(device)
        except Exception as exc:
            _record(bad, i, exc, names)


def _resize_all(todo: list[tuple[int, torch.Tensor, ResizePlan]], pcfg: PreprocessConfig,
                chunk_pixels: int, batched: bool, done: dict[int, torch.Tensor],
                bad: dict[int, tuple[str, str]], names: list[str] | None) -> None:
    """Resize/crop every decoded image in batched chunks; unbatched, or on an unexpected error
    (out of memory included), one by one with ``preprocess``, so a failure is pinned on the
    image that caused it."""
    from ..preprocess import preprocess
    if batched and todo:
        try:
            out = resize_crop_batch([img for _, img, _ in todo], [p for _, _, p in todo],
                                    chunk_pixels)
            done.update((i, o) for (i, _, _), o in zip(todo, out))
            return
        except Exception as exc:
            log.warning("batched resize of %d decoded images failed (%s: %s); resizing them one "
                        "at a time instead", len(todo), type(exc).__name__, str(exc)[:200])
        free_device_memory(todo[0][1].device)       # in case it ran out of memory
    for i, img, _ in todo:
        try:
            done[i] = preprocess(img, pcfg)
        except Exception as exc:
            _record(bad, i, exc, names)


def _record(bad: dict[int, tuple[str, str]], i: int, exc: Exception,
            names: list[str] | None) -> None:
    """Record image ``i``'s failure in ``bad``; out of device memory is not the image's
    failure: a WebsslError naming the sample stops the run instead."""
    if isinstance(exc, torch.OutOfMemoryError):
        who = repr(names[i]) if names is not None else f"#{i} of its batch"
        first = (str(exc).splitlines() or [""])[0][:200]
        raise WebsslError(   # one line for the user (exit 1), as the model step's OOM gives
            f"--decode gpu: out of device memory on sample {who} even alone ({first}); rerun "
            f"with --decode cpu or a smaller --batch-size") from exc
    bad[i] = _failure(exc)


def _failure(exc: Exception) -> tuple[str, str]:
    """(error_type, message) for the failure ledger: a DecodeError's own, else the exception's."""
    from ..preprocess import DecodeError
    if isinstance(exc, DecodeError):
        return exc.error_type, exc.message
    return type(exc).__name__, str(exc)[:500]
