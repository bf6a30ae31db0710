"""Decode and preprocess: formats and modes to RGB uint8, broken bytes to typed DecodeErrors,
geometry against the official recipe (torchvision on PIL), PIL float and the HF processor."""
from __future__ import annotations

import io
import struct
import json

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode

from tests.helpers import images as gen
from webssl_cli.config import PreprocessConfig
from webssl_cli.errors import UsageError
from webssl_cli.preprocess import (DecodeError, decode_image, describe, load_sample, normalize,
                                   preprocess, short_side_size, worker_init)

CFG = PreprocessConfig(resolution=224)


def as_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()


def pil_rgb(data: bytes, transpose: bool = True) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    if transpose:
        im = ImageOps.exif_transpose(im)
    return np.asarray(im.convert("RGB")).astype(int)


def hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy().astype(int)


@pytest.mark.parametrize("name", sorted(gen.GOOD_SPECIAL) + ["example"])
def test_every_format_and_mode_decodes_to_rgb_uint8(name):
    data = gen.example_paths()[0].read_bytes() if name == "example" else gen.GOOD_SPECIAL[name]()
    x = decode_image(data, CFG)
    assert x.dtype == torch.uint8 and x.ndim == 3 and x.shape[0] == 3
    out = load_sample(data, CFG)
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8 and out.is_contiguous()


@pytest.mark.parametrize("name", sorted(gen.BROKEN))
def test_broken_bytes_raise_a_typed_decode_error(name):
    make, expected = gen.BROKEN[name]
    with pytest.raises(DecodeError) as info:
        load_sample(make(), CFG)
    assert info.value.error_type == expected
    assert info.value.message and expected in str(info.value)


def test_jpeg_pixels_equal_pil_and_exif_orientation_is_applied():
    data = gen.example_paths()[1].read_bytes()
    assert np.abs(hwc(decode_image(data, CFG)) - pil_rgb(data)).max() <= 1
    for orientation, shown in ((6, (120, 80)), (8, (120, 80)), (3, (80, 120))):
        rotated = gen.exif_rotated_jpeg(orientation)
        x = decode_image(rotated, CFG)
        assert tuple(x.shape[1:]) == shown          # (H, W) as displayed
        assert np.abs(hwc(x) - pil_rgb(rotated)).max() <= 1


def _with_app1(jpeg: bytes, *bodies: bytes) -> bytes:
    segs = b"".join(b"\xff\xe1" + struct.pack(">H", len(b) + 2) + b for b in bodies)
    return jpeg[:2] + segs + jpeg[2:]


def _exif(**tags: int) -> bytes:
    exif = Image.Exif()
    for tag, value in tags.items():
        exif[{"orientation": 0x0112, "software": 0x0131}[tag]] = value
    return exif.tobytes()          # b"Exif\0\0" + a TIFF block (big-endian here)


def _xmp(orientation: int | None) -> bytes:
    attr = f' tiff:Orientation="{orientation}"' if orientation else ""
    return (b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF "
            b"xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'><rdf:Description "
            b"xmlns:tiff='http://ns.adobe.com/tiff/1.0/'" + attr.encode() +
            b"/></rdf:RDF></x:xmpmeta>")


@pytest.mark.parametrize("case", ["xmp-then-exif", "xmp-only", "exif-without-tag-then-xmp",
                                  "exif-first-then-xmp", "plain-xmp"])
@pytest.mark.parametrize("draft", [False, True])
def test_orientation_where_torchvision_does_not_look_is_applied(case, draft):
    """torchvision reads the first APP1 only; PIL reads EXIF anywhere and XMP: decoding gives
    what PIL's exif_transpose shows, with and without --jpeg-draft."""
    stored = gen.encode(gen.photo(1, (1200, 800)), "JPEG", quality=92)
    data = _with_app1(stored, *{
        "xmp-then-exif": (_xmp(None), _exif(orientation=6)),
        "xmp-only": (_xmp(6),),
        "exif-without-tag-then-xmp": (_exif(software=1), _xmp(8)),
        "exif-first-then-xmp": (_exif(orientation=3), _xmp(6)),
        "plain-xmp": (_xmp(None),)}[case])
    shown = Image.open(io.BytesIO(data))
    want = {"xmp-then-exif": 6, "xmp-only": 6, "exif-without-tag-then-xmp": 8,
            "exif-first-then-xmp": 3, "plain-xmp": 1}[case]
    assert shown.getexif().get(0x0112, 1) == want      # what PIL reads (the reference)
    cfg = PreprocessConfig(resolution=224, jpeg_draft=draft)
    x = decode_image(data, cfg)
    h, w = (1200, 800) if want in (6, 8) else (800, 1200)
    if draft:
        assert x.shape[1] * w == x.shape[2] * h        # the same aspect, DCT-scaled
        return
    assert tuple(x.shape[1:]) == (h, w)
    assert np.abs(hwc(x) - pil_rgb(data)).max() <= 1


def test_cmyk_gray_and_palette_match_pil_convert():
    for data in (gen.cmyk_jpeg(), gen.gray_jpeg(), gen.palette_transparent_png(), gen.la_png()):
        x = decode_image(data, CFG)
        assert np.abs(hwc(x) - pil_rgb(data)).max() <= 1


def test_alpha_is_dropped_not_composited():
    data = gen.rgba_png()   # left half fully transparent
    for mode in ("resize-crop", "squash"):       # the official recipes: PIL convert("RGB")
        x = hwc(decode_image(data, PreprocessConfig(resolution=224, mode=mode)))
        assert np.array_equal(x, pil_rgb(data))
        assert (x[:, :20] < 250).any()   # no white compositing of the transparent half


def test_shortest_crop_composites_alpha_onto_white_as_transformers_does():
    from transformers.image_transforms import convert_to_rgb
    cfg = PreprocessConfig(resolution=224, mode="shortest-crop")
    for data in (gen.rgba_png(), gen.la_png(), gen.palette_transparent_png(), gen.gray_jpeg()):
        theirs = convert_to_rgb(Image.open(io.BytesIO(data)), return_numpy=True).astype(int)
        assert np.array_equal(hwc(decode_image(data, cfg)), theirs)
    x = hwc(decode_image(gen.rgba_png(), cfg))
    assert (x[:, :20] == 255).all()                # the transparent half is white


def test_sixteen_bit_is_scaled_to_eight_bits():
    x = decode_image(gen.gray16_png(w=64, h=4), CFG)
    row = x[0, 0].tolist()
    assert row[0] == 0 and row[-1] == 255 and row == sorted(row)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    rgb = decode_image(gen.rgb16_png(), CFG)
    assert rgb.shape == (3, 24, 32) and int(rgb.max()) > 200 and int(rgb.min()) < 50


def test_bomb_limit_is_configurable_and_pil_global_restored():
    before = Image.MAX_IMAGE_PIXELS
    small = PreprocessConfig(resolution=224, max_image_pixels=64 * 48 - 1)
    for data in (gen.make_png(64, 48), gen.make_jpeg(64, 48)):
        with pytest.raises(DecodeError, match="DecompressionBomb"):
            decode_image(data, small)
    assert decode_image(gen.make_png(64, 48), PreprocessConfig(224, max_image_pixels=64 * 48)).shape == (3, 48, 64)
    # a limit above PIL's own (2 x 89.5 MP): PIL's check must not fire first with its own number
    big = PreprocessConfig(resolution=224, max_image_pixels=10**12)
    with pytest.raises(DecodeError) as info:
        decode_image(gen.huge_png(20_000, 20_000), big)    # 400 MP: passes our limit, bad IDAT
    assert info.value.error_type in ("CorruptImage", "TruncatedImage")
    assert Image.MAX_IMAGE_PIXELS == before


def test_extreme_aspect_ratio_is_a_decode_error_not_an_allocation():
    cfg = PreprocessConfig(resolution=224, max_image_pixels=1_000_000)
    thin = gen.encode(gen.photo(0, (4000, 2)), "PNG")
    with pytest.raises(DecodeError, match="ExtremeAspectRatio"):
        load_sample(thin, cfg)


@pytest.mark.parametrize("mode", ["resize-crop", "squash", "shortest-crop"])
@pytest.mark.parametrize("size", [(640, 480), (333, 517), (224, 224), (7, 5), (1000, 120)])
def test_every_mode_gives_s_by_s(mode, size):
    cfg = PreprocessConfig(resolution=112, mode=mode)
    out = preprocess(as_tensor(gen.photo(0, size)), cfg)
    assert out.shape == (3, 112, 112) and out.dtype == torch.uint8 and out.is_contiguous()


def test_resize_crop_matches_the_official_recipe_on_pil():
    official = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
                          T.CenterCrop(224)])
    for i, size in enumerate([(640, 480), (375, 500), (300, 300), (181, 97)]):
        im = gen.photo(i, size)
        ours = hwc(preprocess(as_tensor(im), CFG))
        ref = np.asarray(official(im)).astype(int)
        diff = np.abs(ours - ref)
        assert diff.max() <= 2 and diff.mean() < 0.05, (size, diff.max(), diff.mean())


def test_uint8_bicubic_is_close_to_pil_on_float():
    for i, size in enumerate([(640, 480), (300, 500), (150, 100)]):
        im = gen.photo(i, size)
        x = as_tensor(im)
        h, w = short_side_size(x.shape[1], x.shape[2], 256)
        ours = hwc(F.resize(x, [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True))
        arr = np.asarray(im).astype(np.float32)
        ref = np.stack([np.asarray(Image.fromarray(arr[..., c], mode="F").resize((w, h), Image.BICUBIC))
                        for c in range(3)], -1)
        diff = np.abs(ours - np.clip(ref, 0, 255))
        assert diff.mean() < 0.35 and np.quantile(diff, 0.999) < 1.5 and diff.max() <= 8


def test_center_crop_rounds_like_torchvision_and_hf_is_one_pixel_off():
    from transformers import BitImageProcessorPil

    im = gen.photo(2, (259 * 3, 256 * 3))      # resized to 259x256: (259-224)/2 = 17.5
    x = as_tensor(im)
    resized = F.resize(x, [256, 259], interpolation=InterpolationMode.BICUBIC, antialias=True)
    ours = preprocess(x, CFG)
    assert torch.equal(ours, resized[:, 16:240, 18:242])           # round(17.5) = 18, top 16
    hf = BitImageProcessorPil(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                              resample=3, do_rescale=False, do_normalize=False)
    hf_out = np.asarray(hf(images=im)["pixel_values"][0]).astype(int)      # (3, 224, 224)
    hf_aligned = resized[:, 16:240, 17:241].numpy().astype(int)          # floor(17.5) = 17
    assert np.abs(hf_out - hf_aligned).max() <= 2
    assert np.abs(hf_out - ours.numpy().astype(int)).mean() > np.abs(hf_out - hf_aligned).mean()


def test_squash_and_shortest_crop_follow_their_sources():
    from transformers import BitImageProcessorPil

    im = gen.photo(3, (400, 300))
    x = as_tensor(im)
    squash = preprocess(x, PreprocessConfig(224, mode="squash"))
    demo = np.asarray(T.Resize((224, 224), interpolation=T.InterpolationMode.BICUBIC)(im)).astype(int)
    assert np.abs(hwc(squash) - demo).max() <= 2
    hf = BitImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                              resample=3, do_rescale=False, do_normalize=False)
    # 298x224: crop at 37 both ways; 335x224: HF floors the offset to 55 (torchvision rounds
    # 55.5 to 56), and shortest-crop follows HF
    for im in (im, gen.photo(4, (500, 334)), gen.photo(5, (334, 500))):
        short = preprocess(as_tensor(im), PreprocessConfig(224, mode="shortest-crop"))
        ref = np.asarray(hf(images=im)["pixel_values"][0]).astype(int)
        assert np.abs(short.numpy().astype(int) - ref).max() <= 2, im.size


def test_normalize_on_device_formula():
    batch = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = normalize(batch, CFG)
    mean = torch.tensor(CFG.mean).view(1, 3, 1, 1)
    std = torch.tensor(CFG.std).view(1, 3, 1, 1)
    assert torch.allclose(out, (batch.float() / 255 - mean) / std, atol=1e-6)
    assert normalize(batch, CFG, torch.bfloat16).dtype == torch.bfloat16


def test_describe_is_json_and_names_its_source():
    for mode, word in (("resize-crop", "README"), ("squash", "demo"), ("shortest-crop", "Hugging Face")):
        d = describe(PreprocessConfig(224, mode=mode))
        json.dumps(d)
        assert word in d["follows"] and d["interpolation"] == "bicubic" and d["antialias"] is True
    d = describe(CFG)
    assert d["resize_short"] == 256 and "floor" in d["crop"] and "dropped" in d["alpha"]
    with pytest.raises(UsageError, match="preprocess"):
        describe(PreprocessConfig(224, mode="stretch"))
    with pytest.raises(UsageError):
        preprocess(torch.zeros(3, 8, 8, dtype=torch.uint8), PreprocessConfig(224, mode="stretch"))


def test_decode_error_survives_pickling():
    import pickle
    err = pickle.loads(pickle.dumps(DecodeError("TruncatedImage", "cut")))
    assert err.error_type == "TruncatedImage" and err.message == "cut"


def test_worker_init_sets_one_thread():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        worker_init(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 10 * np.log10(255 ** 2 / max(mse, 1e-12))


@pytest.mark.parametrize("mode", ["resize-crop", "squash", "shortest-crop"])
def test_jpeg_draft_scales_big_jpegs_close_to_exact_and_leaves_small_ones_exact(mode):
    exact, draft = PreprocessConfig(224, mode), PreprocessConfig(224, mode, jpeg_draft=True)
    big = gen.encode(gen.photo(0, (1600, 1200)), "JPEG", quality=90)
    a, b = load_sample(big, exact), load_sample(big, draft)
    assert a.shape == b.shape == (3, 224, 224)
    assert not torch.equal(a, b)                      # the DCT-scaled decode really ran
    assert _psnr(a, b) > 30
    for w, h in ((500, 400), (300, 1400)):            # < 2x the target on a side: exact path
        small = gen.encode(gen.photo(1, (w, h)), "JPEG", quality=90)
        assert torch.equal(load_sample(small, exact), load_sample(small, draft))
    png = gen.encode(gen.photo(0, (1600, 1200)), "PNG")   # not a JPEG: untouched
    assert torch.equal(load_sample(png, exact), load_sample(png, draft))


def test_jpeg_draft_keeps_exif_orientation_gray_and_cmyk():
    exact, draft = PreprocessConfig(112), PreprocessConfig(112, jpeg_draft=True)
    im = gen.photo(2, (1000, 600))
    exif = Image.Exif()
    exif[0x0112] = 6
    cases = {"exif6": gen.encode(im, "JPEG", quality=92, exif=exif.tobytes()),
             "gray": gen.encode(im.convert("L"), "JPEG", quality=92),
             "cmyk": gen.encode(im.convert("CMYK"), "JPEG", quality=92)}
    for name, data in cases.items():
        a, b = load_sample(data, exact), load_sample(data, draft)
        assert not torch.equal(a, b), name
        assert _psnr(a, b) > 30, name                 # a wrong rotation would be ~10 dB


def test_jpeg_draft_is_described_only_when_on_and_keeps_big_jpegs_off_the_gpu_route():
    from webssl_cli.pipeline.gpu_decode import route_to_gpu
    assert "jpeg_draft" not in describe(PreprocessConfig(224))
    assert "DCT" in describe(PreprocessConfig(224, jpeg_draft=True))["jpeg_draft"]
    big, small = gen.make_jpeg(1600, 1200), gen.make_jpeg(400, 300)
    assert route_to_gpu(big, PreprocessConfig(224))
    assert not route_to_gpu(big, PreprocessConfig(224, jpeg_draft=True))
    assert route_to_gpu(small, PreprocessConfig(224, jpeg_draft=True))
