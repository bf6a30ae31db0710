"""`--decode gpu`: batched JPEG decoding (nvJPEG via torchvision) and resize/crop on the GPU.

Workers only read bytes and route each sample: a plain, complete JPEG (end-of-image marker
present, size within the bomb limit, RGB or grey, no EXIF rotation) travels as raw bytes;
anything else is decoded on the CPU in the worker as usual. On the GPU a batch is decoded in
one call; if that call fails, each image is retried alone on the GPU and then on the CPU, so
an image the GPU cannot decode is still decoded or recorded as a failure, never dropped.
Same-size images are then resized together.
"""
from __future__ import annotations

import io

import torch

from ..config import PreprocessConfig


def route_to_gpu(data: bytes, pcfg: PreprocessConfig) -> bool:
    """True for JPEGs the GPU path can take as they are."""
    from PIL import Image

    from ..preprocess.sniff import jpeg_size, sniff_format
    from ..preprocess.transforms import draft_request
    if sniff_format(data) != "jpeg":
        return False
    if not (data.endswith(b"\xff\xd9") or data.rstrip(b"\x00").endswith(b"\xff\xd9")):
        return False          # truncated: decoders disagree on it, the CPU path names it
    size = jpeg_size(data)
    if size is None or size[0] * size[1] > pcfg.max_image_pixels:
        return False          # let the CPU path produce the precise error
    if draft_request(size[0], size[1], pcfg) is not None:
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


GROUP_PIXELS = 32_000_000   # decoded pixels resized in one call (~384 MB as float32 on the GPU)


def decode_on_gpu(raws: list[torch.Tensor], pcfg: PreprocessConfig, device: torch.device,
                  group_pixels: int = GROUP_PIXELS):
    """Decode + preprocess raw JPEG byte tensors. Returns (images (n,3,S,S) uint8 on device,
    ok positions, {position: (error_type, message)}).

    Decoded images of the same size are resized together, in chunks of at most
    ``group_pixels`` pixels: one call instead of one per image (web datasets are often all
    one size, e.g. img2dataset's 256x256 output), with the same result as one by one."""
    from torchvision.io import ImageReadMode, decode_jpeg

    from ..preprocess import load_sample

    done: dict[int, torch.Tensor] = {}                   # position -> (3,S,S)
    by_shape: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
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
        by_shape.setdefault(tuple(img.shape), []).append((i, img))
    for group in by_shape.values():
        per = max(1, group_pixels // (group[0][1].shape[-2] * group[0][1].shape[-1]))
        for k in range(0, len(group), per):
            _preprocess_together(group[k:k + per], pcfg, done, bad)
    ok = sorted(done)
    images = torch.stack([done[i] for i in ok]) if ok else None
    return images, ok, bad


def _preprocess_together(chunk: list[tuple[int, torch.Tensor]], pcfg: PreprocessConfig,
                         done: dict[int, torch.Tensor], bad: dict[int, tuple[str, str]]) -> None:
    """Resize/crop same-size images in one call; on an unexpected error, one by one, so the
    failure is pinned on the image that caused it."""
    from ..preprocess import DecodeError, preprocess
    try:
        out = preprocess(torch.stack([img for _, img in chunk]), pcfg)
        done.update((i, o) for (i, _), o in zip(chunk, out))
        return
    except DecodeError as exc:        # decided by the size: the same for every image here
        bad.update((i, _failure(exc)) for i, _ in chunk)
        return
    except Exception:
        pass
    for i, img in chunk:
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
