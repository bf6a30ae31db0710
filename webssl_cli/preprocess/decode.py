"""Encoded bytes -> uint8 RGB tensor (3, H, W), in DataLoader workers.

* JPEG goes through ``torchvision.io.decode_jpeg`` (libjpeg-turbo, EXIF orientation applied);
  if it refuses a file (odd JPEG flavours), PIL gets a second try. A JPEG whose orientation
  is recorded where torchvision does not look (EXIF behind an XMP segment, XMP only) is
  decoded with PIL, which applies it (``sniff.jpeg_frame``). With ``jpeg_draft`` a JPEG
  at least twice the resize target goes through PIL's draft mode instead: libjpeg decodes it
  at 1/2, 1/4 or 1/8 scale in the DCT, still covering the target (1.5-3x faster on 1000-4000
  px photos; the 224 px crops measured 49.7 dB PSNR, mean |diff| 0.52 levels from the exact
  path).
* Everything else (PNG, WebP, GIF, BMP, TIFF, ...) goes through PIL with
  ``ImageOps.exif_transpose``; PIL reads the first frame of animations.
* Modes: gray / 1-bit / palette / CMYK / YCbCr / LAB -> RGB via PIL ``convert("RGB")``;
  16-bit gray (``I;16*``, ``I``) is scaled to 8 bits (x * 255 / 65535, rounded); 16-bit
  RGB/RGBA/LA PNGs come from PIL already reduced to 8 bits by keeping the high byte
  (x >> 8, up to one level below the rounded value); float (``F``) is read as [0, 1] when its max is
  <= 1, else as [0, 255].
* Alpha (RGBA, LA, PA, palette transparency) follows the recipe the mode copies: dropped
  (``Image.convert("RGB")``, as the official demo) for ``resize-crop`` and ``squash``;
  composited onto white for ``shortest-crop``, as the HF image processors do
  (transformers' ``convert_to_rgb``), so features match theirs.
* Decompression bombs: the declared size (JPEG SOF header, or PIL's lazy ``Image.open``) is
  checked against ``PreprocessConfig.max_image_pixels`` before any pixel is decoded. PIL's own
  global limit is switched off while we decode (our check replaces it, with the configured
  limit).

Every failure is a :class:`DecodeError` with a stable ``error_type``: EmptyImage,
UnknownFormat, DecompressionBomb, TruncatedImage, CorruptImage.
"""
from __future__ import annotations

import io
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

from ..config import PreprocessConfig
from ..errors import CODE_ERRORS
from .errors import DecodeError
from .sniff import jpeg_frame, sniff_format
from .transforms import draft_request

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they work and are the
# measured fast path, so the per-call notice is silenced (only that message).
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of "
                        "TorchVision are deprecated", category=DeprecationWarning)


def decode_image(data: bytes, cfg: PreprocessConfig) -> torch.Tensor:
    """Decode ``data`` to a uint8 tensor (3, H, W) in RGB, EXIF orientation applied.

    The tensor is a channels-last view (pixel-interleaved memory, as decoders write it): the
    uint8 antialiased resize is ~3x faster on it than on planar memory, and making it
    contiguous would cost another full-image copy. :func:`preprocess` returns contiguous output.
    """
    if not data:
        raise DecodeError("EmptyImage", "the sample has 0 bytes")
    if sniff_format(data) == "jpeg":
        frame = jpeg_frame(data)
        if frame is not None:
            size = (frame.width, frame.height)
            _check_pixels(size, cfg)
            draft = draft_request(size[0], size[1], cfg)
            if draft is not None or frame.orientation_elsewhere:
                return _decode_with_pil(data, cfg, draft)
            try:
                return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                   mode=ImageReadMode.RGB, apply_exif_orientation=True)
            except RuntimeError:
                pass   # let PIL try (and word the error if it fails too)
    return _decode_with_pil(data, cfg)


def _check_pixels(size: tuple[int, int], cfg: PreprocessConfig) -> None:
    w, h = size
    if w * h > cfg.max_image_pixels:
        raise DecodeError("DecompressionBomb",
                          f"declared size {w}x{h} = {w * h:,} pixels exceeds the "
                          f"decompression-bomb limit of {cfg.max_image_pixels:,} pixels; "
                          "if the image is genuine, raise the limit with --max-image-pixels "
                          "(PreprocessConfig.max_image_pixels in the Python API)")


def _decode_with_pil(data: bytes, cfg: PreprocessConfig,
                     draft: tuple[int, int] | None = None) -> torch.Tensor:
    """PIL decode; ``draft`` asks a JPEG for a DCT-scaled size (at least that big)."""
    with _pil_limit_off():
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise DecodeError("UnknownFormat",
                              f"not an image format PIL knows ({len(data)} bytes, "
                              f"starting {data[:8]!r})") from None
        except CODE_ERRORS:
            raise
        except Exception as exc:   # noqa: BLE001 - any parser failure is a bad sample
            raise DecodeError(_kind(exc), f"{type(exc).__name__}: {exc}") from None
        _check_pixels(im.size, cfg)
        try:
            if draft is not None and im.format == "JPEG":
                im.draft(None, draft)      # DCT scaling; mode and EXIF handled as usual
            im.load()
            im = _exif_transpose(im)
            if cfg.mode == "shortest-crop" and _has_alpha(im):
                im = _on_white(im)
            arr = _to_rgb_array(im)
        except OSError as exc:
            raise DecodeError(_kind(exc), f"{im.format or 'image'}: {exc}") from None
        except CODE_ERRORS:
            raise
        except Exception as exc:   # noqa: BLE001 - SyntaxError, ValueError, EOFError, ...
            raise DecodeError("CorruptImage",
                              f"{im.format or 'image'}: {type(exc).__name__}: {exc}") from None
    return torch.from_numpy(arr).permute(2, 0, 1)


def _kind(exc: Exception) -> str:
    """PIL words a cut file "image file is truncated" or "Truncated File Read"."""
    return ("TruncatedImage" if isinstance(exc, OSError) and "truncated" in str(exc).lower()
            else "CorruptImage")


def _exif_transpose(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:   # noqa: BLE001 - an unreadable EXIF block leaves the pixels as stored
        return im


def _has_alpha(im: Image.Image) -> bool:
    return "A" in im.getbands() or im.info.get("transparency") is not None


def _on_white(im: Image.Image) -> Image.Image:
    """Transparency composited onto white (transformers' ``convert_to_rgb``)."""
    rgba = im.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)),
                                 rgba).convert("RGB")


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 array from any PIL mode (see the module docstring for the rules)."""
    mode = im.mode
    if mode == "RGB":
        return np.array(im)
    if mode.startswith("I;16") or mode == "I":
        wide = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        f = np.nan_to_num(np.asarray(im, dtype=np.float32))
        scale = 255.0 if f.size and float(f.max()) <= 1.0 else 1.0
        gray = np.clip(np.rint(f * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.array(im.convert("RGB"))


_limit_lock = threading.Lock()
_limit_depth = 0
_limit_saved: int | None = None


@contextmanager
def _pil_limit_off() -> Iterator[None]:
    """Switch PIL's global bomb check off (ours, with the configured limit, replaces it)."""
    global _limit_depth, _limit_saved
    with _limit_lock:
        if _limit_depth == 0:
            _limit_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _limit_depth += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_depth -= 1
            if _limit_depth == 0:
                Image.MAX_IMAGE_PIXELS = _limit_saved
