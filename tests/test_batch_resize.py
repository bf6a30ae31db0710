"""preprocess.batch_resize: resize + crop of different-size images as two batched matmuls,
checked against torch's own antialiased bicubic interpolation (the kernel torchvision's resize
runs on a GPU tensor)."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from webssl_cli.config import PreprocessConfig
from webssl_cli.preprocess.batch_resize import (aa_bicubic_weights, resize_crop_batch,
                                                resize_crop_chunk, taps_for)
from webssl_cli.preprocess.transforms import ResizePlan, plan_resize

# upscale, downscale by 1.3x to 9x, one side exact, extreme aspect, odd crop offsets
SIZES = [(90, 70), (300, 200), (223, 224), (256, 256), (1000, 111), (40, 64), (57, 57),
         (59, 61), (900, 1600), (500, 375)]


def _float_resize(img: torch.Tensor, p: ResizePlan) -> torch.Tensor:
    out = F.resize(img.to(torch.float32), [p.new_h, p.new_w],
                   interpolation=InterpolationMode.BICUBIC, antialias=True)
    return out[..., p.top:p.top + p.size, p.left:p.left + p.size]


def gpu_reference(img: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """What ``preprocess`` gives a uint8 image on a GPU: float32 resize, clamped, rounded once."""
    p = plan_resize(int(img.shape[-2]), int(img.shape[-1]), cfg)
    return _float_resize(img, p).clamp(0, 255).round().to(torch.uint8)


def _images(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in SIZES]


@pytest.mark.parametrize("mode", ["resize-crop", "squash", "shortest-crop"])
def test_weights_reproduce_torch_interpolate_in_float(mode: str) -> None:
    cfg = PreprocessConfig(56, mode=mode)
    for img in _images():
        p = plan_resize(int(img.shape[-2]), int(img.shape[-1]), cfg)
        h, w = img.shape[-2:]
        args = [torch.tensor([float(v)]) for v in (h, w, p.new_h, p.new_w, p.top, p.left)]
        wy = aa_bicubic_weights(args[0], args[2], args[4], p.size, h, taps_for(h / p.new_h))[0]
        wx = aa_bicubic_weights(args[1], args[3], args[5], p.size, w, taps_for(w / p.new_w))[0]
        assert torch.allclose(wy.sum(1), torch.ones(p.size))
        ours = wy @ img.to(torch.float32) @ wx.T
        ref = _float_resize(img, p)
        assert (ours - ref).abs().max() < 2e-3, (tuple(img.shape), mode)


@pytest.mark.parametrize("mode,size", [("resize-crop", 224), ("squash", 56),
                                       ("shortest-crop", 224)])
def test_batch_matches_the_per_image_gpu_arithmetic_in_any_chunking(mode: str, size: int) -> None:
    cfg = PreprocessConfig(size, mode=mode)
    imgs = _images(1)
    plans = [plan_resize(int(i.shape[-2]), int(i.shape[-1]), cfg) for i in imgs]
    refs = [gpu_reference(i, cfg) for i in imgs]
    for budget in (10**9, 300_000, 1):       # one chunk; a few; each image alone (over budget)
        out = resize_crop_batch(imgs, plans, budget)
        assert len(out) == len(imgs)
        for o, ref, img in zip(out, refs, imgs):
            assert o.dtype == torch.uint8 and o.shape == (3, size, size)
            diff = (o.int() - ref.int()).abs()
            # float32 summation order: a value sitting on .5 may round the other way
            assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3, tuple(img.shape)


def test_same_size_input_is_left_as_is_and_plans_must_share_a_size() -> None:
    img = _images()[6]                                  # 57 x 57
    p = ResizePlan(57, 57, 0, 0, 57)
    assert torch.equal(resize_crop_chunk([img], [p])[0], img)
    assert resize_crop_batch([], []) == []
    with pytest.raises(ValueError, match="different output sizes"):
        resize_crop_chunk([img, img], [p, ResizePlan(64, 64, 0, 0, 64)])


def test_images_already_at_their_resize_size_are_only_cropped_in_order() -> None:
    """img2dataset's 256 px output for a 224 model: resize_short is 256, so nothing to resize;
    those rows are exact crops, mixed with resized rows in input order."""
    from webssl_cli.preprocess import preprocess
    cfg = PreprocessConfig(224)
    g = torch.Generator().manual_seed(3)
    shapes = [(256, 256), (300, 420), (256, 256), (256, 301), (180, 200)]
    imgs = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in shapes]
    plans = [plan_resize(h, w, cfg) for h, w in shapes]
    assert [(p.new_h, p.new_w) == s for p, s in zip(plans, shapes)] == [True, False, True, True,
                                                                         False]
    out = resize_crop_batch(imgs, plans)
    for k in (0, 2, 3):
        assert torch.equal(out[k], preprocess(imgs[k], cfg)), k
    for k in (1, 4):
        assert (out[k].int() - gpu_reference(imgs[k], cfg).int()).abs().max() <= 1, k
