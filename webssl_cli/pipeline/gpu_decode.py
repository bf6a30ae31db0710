"""`--decode gpu`: batched JPEG decoding (nvJPEG via torchvision) and resize/crop on the GPU.

Workers only read bytes and route each sample: a plain, complete baseline JPEG (end-of-image
marker present, size within the bomb limit, RGB or grey, no EXIF rotation) travels as raw
bytes; anything else (progressive JPEGs included) is decoded on the CPU in the worker as
usual. On the GPU a batch is decoded in one call; if that call fails, each image is retried
alone on the GPU and then on the CPU, so an image the GPU cannot decode is still decoded or
recorded as a failure, never dropped.
All decoded images are then resized and cropped together (``preprocess.batch_resize``).
"""
from __future__ import annotations

import io
import logging

import torch

from ..config import PreprocessConfig
from ..preprocess.batch_resize import CHUNK_PIXELS, resize_crop_batch
from ..preprocess.transforms import ResizePlan, plan_resize

log = logging.getLogger("webssl.decode")


def route_to_gpu(data: bytes, pcfg: PreprocessConfig) -> bool:
    """True for JPEGs the GPU path can take as they are: complete baseline JPEGs.

    Progressive (and other non-baseline) JPEGs go to the CPU workers: nvJPEG's batched
    hardware decoder (A100/H100) takes baseline files only, and torchvision decodes the rest
    one at a time, Huffman-decoding on the decode thread with a stream sync per image."""
    from PIL import Image

    from ..preprocess.sniff import BASELINE_SOF, jpeg_frame, sniff_format
    from ..preprocess.transforms import draft_request
    if sniff_format(data) != "jpeg":
        return False
    if not (data.endswith(b"\xff\xd9") or data.rstrip(b"\x00").endswith(b"\xff\xd9")):
        return False          # truncated: decoders disagree on it, the CPU path names it
    frame = jpeg_frame(data)
    if frame is None or frame.width * frame.height > pcfg.max_image_pixels:
        return False          # let the CPU path produce the precise error
    if frame.sof != BASELINE_SOF:
        return False          # progressive, 12-bit, arithmetic, lossless: CPU workers
    if draft_request(frame.width, frame.height, pcfg) is not None:
        return False          # --jpeg-draft: the worker's DCT-scaled decode, same as --decode cpu
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode != "RGB" and im.mode != "L":   # CMYK / YCCK: CPU
                return False
            return im.getexif().get(0x0112, 1) == 1
    except Exception:
        return False


def _settle_stream(device: torch.device) -> None:
    """Wait for the calling stream's queued work before an nvJPEG call. torchvision decodes on
    an internal stream into tensors allocated on the caller's stream, and that internal stream
    does not wait for the caller's: memory freed by our earlier (still queued) resize kernels
    could be handed to the decoder and overwritten under them. The main thread no longer syncs
    on every batch, so this stream can run far behind the host. That is the likely cause of
    the few rows with cosine < 0 against CPU decoding in an H100 run without this wait; the
    wait has not run on a GPU yet (benchmarks/README.md)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def decode_on_gpu(raws: list[torch.Tensor], pcfg: PreprocessConfig, device: torch.device,
                  chunk_pixels: int = CHUNK_PIXELS, batched: bool = True):
    """Decode + preprocess raw JPEG byte tensors. Returns (images (n,3,S,S) uint8 on device,
    ok positions, {position: (error_type, message)}).

    All decoded images are resized and cropped together (``preprocess.batch_resize``: two
    batched matmuls per chunk of at most ``chunk_pixels`` padded pixels), not one call per
    image: on a GPU, ``preprocess`` launches about six kernels per image from Python, holding
    the GIL against the model's thread. ``batched=False`` is that per-image path (kept for
    benchmarks/gpu_check.py's comparison)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    from ..preprocess import load_sample

    done: dict[int, torch.Tensor] = {}                   # position -> (3,S,S)
    todo: list[tuple[int, torch.Tensor, ResizePlan]] = []
    bad: dict[int, tuple[str, str]] = {}
    try:
        _settle_stream(device)
        decoded = decode_jpeg(raws, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        decoded = [None] * len(raws)
    for i, img in enumerate(decoded):
        if img is None:      # the batch call failed: this image alone, then on the CPU
            try:
                _settle_stream(device)
                img = decode_jpeg(raws[i], mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                try:
                    done[i] = load_sample(raws[i].numpy().tobytes(), pcfg).to(device)
                except Exception as exc:
                    bad[i] = _failure(exc)
                continue
        try:
            todo.append((i, img, plan_resize(int(img.shape[-2]), int(img.shape[-1]), pcfg)))
        except Exception as exc:          # decided by the size (ExtremeAspectRatio)
            bad[i] = _failure(exc)
    _resize_all(todo, pcfg, chunk_pixels, batched, done, bad)
    ok = sorted(done)
    images = torch.stack([done[i] for i in ok]) if ok else None
    return images, ok, bad


def _resize_all(todo: list[tuple[int, torch.Tensor, ResizePlan]], pcfg: PreprocessConfig,
                chunk_pixels: int, batched: bool, done: dict[int, torch.Tensor],
                bad: dict[int, tuple[str, str]]) -> None:
    """Resize/crop every decoded image in batched chunks; unbatched, or on an unexpected error,
    one by one with ``preprocess``, so a failure is pinned on the image that caused it."""
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
    for i, img, _ in todo:
        try:
            done[i] = preprocess(img, pcfg)
        except Exception as exc:
            bad[i] = _failure(exc)


def _failure(exc: Exception) -> tuple[str, str]:
    """(error_type, message) for the failure ledger: a DecodeError's own, else the exception's."""
    from ..preprocess import DecodeError
    if isinstance(exc, DecodeError):
        return exc.error_type, exc.message
    return type(exc).__name__, str(exc)[:500]
