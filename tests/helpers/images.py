"""Test images made at test time: good ones of every format/mode, broken ones, WebDataset
shards (written with ``webdataset.TarWriter``) and parquet files with an image column.

Pixels come from the committed example photos (``examples/images``, scikit-image's public
domain samples) so JPEG sizes and content are realistic.
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.jpg"))


def photo(i: int = 0, size: tuple[int, int] | None = None) -> Image.Image:
    """Example photo ``i`` (mod 4) as RGB, optionally resized to ``size`` = (w, h)."""
    paths = example_paths()
    im = Image.open(paths[i % len(paths)]).convert("RGB")
    return im.resize(size, Image.BICUBIC) if size else im


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def make_jpeg(w: int, h: int, seed: int = 0, quality: int = 90) -> bytes:
    return encode(photo(seed, (w, h)), "JPEG", quality=quality)


def make_png(w: int, h: int, seed: int = 0) -> bytes:
    return encode(photo(seed, (w, h)), "PNG")


def make_webp(w: int, h: int, seed: int = 0) -> bytes:
    return encode(photo(seed, (w, h)), "WEBP", quality=90)


def random_image_bytes(rng: np.random.Generator, fmt: str | None = None) -> tuple[bytes, str]:
    """A random-size (40..300 px) JPEG/PNG/WebP of a random example photo: (bytes, extension)."""
    fmt = fmt or str(rng.choice(["jpg", "png", "webp"]))
    w, h = (int(v) for v in rng.integers(40, 300, size=2))
    seed = int(rng.integers(0, 4))
    maker = {"jpg": make_jpeg, "png": make_png, "webp": make_webp}[fmt]
    return maker(w, h, seed), fmt


# --- special and broken files -----------------------------------------------------------------

def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """A 120x80 (stored) JPEG whose EXIF says rotate: shown as 80x120 for orientation 6/8."""
    im = photo(1, (120, 80))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, "JPEG", quality=95, exif=exif.tobytes())


def cmyk_jpeg() -> bytes:
    return encode(photo(2, (96, 64)).convert("CMYK"), "JPEG", quality=95)


def gray_jpeg() -> bytes:
    return encode(photo(2, (96, 64)).convert("L"), "JPEG", quality=95)


def gray16_png(w: int = 64, h: int = 48) -> bytes:
    """16-bit grayscale PNG: a horizontal ramp 0..65535."""
    ramp = np.tile(np.linspace(0, 65535, w).astype(np.uint16), (h, 1))
    return encode(Image.fromarray(ramp), "PNG")


def rgb16_png(w: int = 32, h: int = 24, seed: int = 0) -> bytes:
    """48-bit RGB PNG written by hand (PIL cannot write it)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 65536, size=(h, w, 3), dtype=np.uint16).astype(">u2")
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))
    return png_from_chunks(w, h, bit_depth=16, color_type=2, idat=zlib.compress(raw))


def png_from_chunks(w: int, h: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def huge_png(w: int = 100_000, h: int = 100_000) -> bytes:
    """A PNG declaring w x h RGB pixels with a tiny (wrong) IDAT: a decompression bomb header."""
    return png_from_chunks(w, h, bit_depth=8, color_type=2, idat=zlib.compress(b"\x00" * 64))


def huge_jpeg(w: int = 60_000, h: int = 60_000) -> bytes:
    """A real small JPEG whose SOF header is patched to declare w x h."""
    data = bytearray(make_jpeg(64, 48))
    i = 2
    while True:
        marker = data[i + 1]
        seg = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 9] = struct.pack(">HH", h, w)
            return bytes(data)
        i += 2 + seg


def palette_transparent_png() -> bytes:
    im = photo(0, (40, 30)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(im, "PNG", transparency=0)


def rgba_png() -> bytes:
    im = photo(0, (40, 30)).convert("RGBA")
    alpha = np.zeros((30, 40), np.uint8)
    alpha[:, 20:] = 255
    im.putalpha(Image.fromarray(alpha))
    return encode(im, "PNG")


def la_png() -> bytes:
    return encode(photo(3, (40, 30)).convert("LA"), "PNG")


def truncated_jpeg() -> bytes:
    full = make_jpeg(200, 150, seed=3)
    return full[: len(full) * 2 // 3]


GOOD_SPECIAL = {
    "exif6.jpg": exif_rotated_jpeg,
    "cmyk.jpg": cmyk_jpeg,
    "gray.jpg": gray_jpeg,
    "gray16.png": gray16_png,
    "rgb16.png": rgb16_png,
    "palette.png": palette_transparent_png,
    "rgba.png": rgba_png,
    "la.png": la_png,
    "anim.gif": lambda: encode(photo(1, (50, 40)), "GIF"),
    "pic.bmp": lambda: encode(photo(2, (50, 40)), "BMP"),
    "pic.tiff": lambda: encode(photo(3, (50, 40)), "TIFF"),
}

BROKEN = {   # name -> (bytes maker, expected DecodeError.error_type)
    "truncated.jpg": (truncated_jpeg, "TruncatedImage"),
    "cut_in_header.jpg": (lambda: make_jpeg(200, 150, seed=4)[:300], "TruncatedImage"),
    "empty.jpg": (lambda: b"", "EmptyImage"),
    "text.jpg": (lambda: b"this is not an image\n" * 10, "UnknownFormat"),
    "huge.png": (huge_png, "DecompressionBomb"),
    "huge.jpg": (huge_jpeg, "DecompressionBomb"),
}


def broken_and_special() -> dict[str, bytes]:
    """Every special good file and every broken file, by name."""
    out = {name: make() for name, make in GOOD_SPECIAL.items()}
    out.update({name: make() for name, (make, _) in BROKEN.items()})
    return out


# --- containers -------------------------------------------------------------------------------

def write_shards(folder: Path, n_shards: int, per_shard: int, *, prefix: str = "shard",
                 seed: int = 0, with_json: bool = True,
                 extra: dict[int, list[dict]] | None = None) -> list[Path]:
    """WebDataset shards ``<prefix>-000000.tar``...: per sample a random jpg/png/webp, a
    ``.json`` sidecar ``{"caption", "n"}`` and a ``.txt``; ``extra[shard]`` appends raw
    TarWriter sample dicts (e.g. broken ones). Returns the shard paths."""
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for s in range(n_shards):
        path = folder / f"{prefix}-{s:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for j in range(per_shard):
                data, ext = random_image_bytes(rng)
                sample = {"__key__": f"s{s:02d}_{j:05d}", ext: data, "txt": f"caption {j}"}
                if with_json:
                    sample["json"] = json.dumps({"caption": f"photo {s}/{j}", "n": j}).encode()
                sink.write(sample)
            for sample in (extra or {}).get(s, []):
                sink.write(sample)
        paths.append(path)
    return paths


def write_parquet(path: Path, images: Iterable[bytes | None], *, hf_struct: bool = False,
                  keys: list[str] | None = None, row_group_size: int = 7,
                  column: str = "image") -> Path:
    """A parquet file with one image per row: binary column ``column`` (img2dataset style) or an
    HF ``{"bytes", "path"}`` struct; optional ``key`` column and a ``caption`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = list(images)
    if hf_struct:
        col = pa.array([None if b is None else {"bytes": b, "path": f"img{i}.jpg"}
                        for i, b in enumerate(images)],
                       type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    else:
        col = pa.array(images, type=pa.binary())
    data = {column: col, "caption": pa.array([f"caption {i}" for i in range(len(images))])}
    if keys is not None:
        data["key"] = pa.array(keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(data), path, row_group_size=row_group_size)
    return path
