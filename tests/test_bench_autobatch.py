"""`--batch-size auto` search and the run-time OOM back-off, with real OOM exceptions."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from webssl_cli.backbone.factory import create_model
from webssl_cli.errors import WebsslError
from webssl_cli.model_step import ModelStep, parse_features
from webssl_cli.model_step.autobatch import (CPU_DEFAULT_BATCH, OOMBackoff, find_batch_size,
                                             is_oom, step_probe)

TINY = Path(__file__).resolve().parent / "fixtures" / "official" / "dino-tiny" / "spec.json"


class Budget:
    """A try_batch that allocates n rows and raises CUDA's real OOM above ``max_fit``."""

    def __init__(self, max_fit: int) -> None:
        self.max_fit = max_fit
        self.tried: list[int] = []

    def __call__(self, n: int) -> None:
        self.tried.append(n)
        buf = torch.empty(n, 16)
        if n > self.max_fit:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {buf.numel() * 4} bytes")


@pytest.mark.parametrize("max_fit", [300, 1000, 64, 13])
def test_doubles_then_bisects_to_the_boundary_with_headroom(max_fit):
    b = Budget(max_fit)
    got = find_batch_size(b, start=8, limit=4096, headroom=0.9)
    fits = [n for n in b.tried if n <= max_fit]
    best = max(fits)
    assert max_fit - (8 if max_fit >= 16 else 1) <= best <= max_fit   # bisected to one step
    want = max(8, int(best * 0.9) // 8 * 8) if best >= 8 else max(1, int(best * 0.9))
    assert got == want and (got % 8 == 0 or got < 8)
    assert got <= max_fit
    assert b.tried[:2] == [8, 16]                      # doubling from the start


def test_start_too_big_halves_down():
    b = Budget(3)
    assert find_batch_size(b, start=8) == 2            # 8, 4 fail; 2 and 3 fit; int(3*0.9)
    assert b.tried == [8, 4, 2, 3]


def test_nothing_fits_is_a_clear_error():
    with pytest.raises(WebsslError, match="even a batch of 1"):
        find_batch_size(Budget(0), start=4)


def test_limit_caps_the_search_and_cpu_uses_a_default():
    b = Budget(10**9)
    assert find_batch_size(b, start=8, limit=512, headroom=1.0) == 512
    assert max(b.tried) == 512
    calls = Budget(10**9)
    assert find_batch_size(calls, device="cpu") == CPU_DEFAULT_BATCH and calls.tried == []


def test_other_errors_are_not_swallowed():
    def broken(n: int) -> None:
        raise ValueError("shape mismatch")
    with pytest.raises(ValueError, match="shape mismatch"):
        find_batch_size(broken)
    assert is_oom(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert not is_oom(RuntimeError("expected scalar type Float"))


def tiny_step() -> ModelStep:
    model = create_model(str(TINY), random_init=True)
    feats = parse_features("cls,patches", model.spec.depth, (4, 4))
    return ModelStep(model, feats, torch.device("cpu"), "fp32", (0.485, 0.456, 0.406),
                     (0.229, 0.224, 0.225), out_dtype="float32")


def test_backoff_splits_a_batch_that_runs_out_of_memory_and_keeps_rows_in_order():
    step = tiny_step()
    calls: list[int] = []

    def limited(images: torch.Tensor):       # the real step, failing like a full GPU
        calls.append(len(images))
        if len(images) > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return step(images)

    images = torch.randint(0, 256, (16, 3, 56, 56), dtype=torch.uint8)
    logged: list[tuple[int, int]] = []
    backoff = OOMBackoff(16, on_backoff=lambda old, new: logged.append((old, new)))
    got = backoff(limited, images)
    want = step(images)
    assert set(got) == {"cls", "patches"}
    for k in want:
        assert got[k].shape == want[k].shape
        torch.testing.assert_close(got[k], want[k], atol=1e-4, rtol=1e-4)
    assert backoff.batch_size == 4 and backoff.backoffs == 2 and logged == [(16, 8), (8, 4)]
    assert calls[:3] == [16, 8, 4] and all(n <= 4 for n in calls[2:])
    calls.clear()
    backoff(limited, images[:7])               # the smaller size is kept for later batches
    assert calls == [4, 3]


class PaddedStep(ModelStep):
    """The real step, compiled-style (``pad_to``), on a GPU where more than ``fit`` rows run
    out of memory: the padded rows count, as they do on the device."""
    fit = 8

    def __call__(self, images: torch.Tensor):
        if max(len(images), self.pad_to or 0) > self.fit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().__call__(images)


def test_backoff_on_a_padded_short_batch_halves_the_padded_size_not_the_short_one():
    base = tiny_step()
    step = PaddedStep(base.model, base.features, base.device, "fp32", (0.485, 0.456, 0.406),
                      (0.229, 0.224, 0.225), out_dtype="float32")
    step.pad_to = 16
    logged: list[tuple[int, int]] = []

    def on_backoff(old: int, new: int) -> None:   # what the runner does: pad to the new size
        logged.append((old, new))
        step.pad_to = new

    backoff = OOMBackoff(16, on_backoff=on_backoff)
    images = torch.randint(0, 256, (3, 3, 56, 56), dtype=torch.uint8)   # a flushed tail
    got = backoff(step, images)
    assert logged == [(16, 8)] and backoff.batch_size == 8    # not 3 // 2 = 1
    torch.testing.assert_close(got["cls"], base(images)["cls"], atol=1e-4, rtol=1e-4)


def test_backoff_gives_up_on_one_image():
    def never(images):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")
    with pytest.raises(WebsslError, match="batch of 1 image"):
        OOMBackoff(4)(never, torch.zeros(4, 3, 56, 56, dtype=torch.uint8))


def test_step_probe_runs_the_real_step():
    step = tiny_step()
    probe = step_probe(step, 56, torch.device("cpu"))
    probe(2)   # no exception: the real model ran on a synthetic batch
    assert find_batch_size(probe, start=2, limit=8, headroom=1.0) == 8
