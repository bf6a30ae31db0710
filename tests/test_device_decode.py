"""`--decode gpu`'s pipeline (routing in the workers, the decode thread, merging, failure
accounting) run end to end on a CPU device: the same code the GPU runs, minus the streams."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.extract_helpers import config
from tests.helpers import images as img
from tests.helpers.pieces import loader_pieces
from webssl_cli import extract, read_features
from webssl_cli.config import PreprocessConfig
from webssl_cli.distributed import detect_rank
from webssl_cli.distributed.signals import StopFlag
from webssl_cli.errors import WebsslError
from webssl_cli.pipeline.gpu_decode import route_to_gpu
from webssl_cli.pipeline.runner import RankRun
from webssl_cli.pipeline.setup import prepare
from webssl_cli.store import OutputLayout, done_units


def device_decode_run(cfg, share: float | None = 0.0):
    """What `webssl extract --decode gpu --cpu-share SHARE` runs, on the CPU device. The
    default 0 sends every JPEG the GPU can take to the decode thread, whatever the timings
    (``auto`` balances from measured costs: which JPEG goes where would vary by run)."""
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, decode="gpu",
                                                               cpu_share=share))
    rank = detect_rank()
    return RankRun(prepare(cfg, rank, "fp32"), rank, torch.device("cpu"), "fp32").run(StopFlag())


def ledger(out: Path) -> dict[str, str]:
    found = {}
    for rec in done_units(OutputLayout(out)).values():
        if rec.ledger is not None:
            for line in (out / rec.ledger.path).read_text().splitlines():
                e = json.loads(line)
                found[e["key"]] = e["error_type"]
    return found


def progressive_jpeg(w: int, h: int, seed: int) -> bytes:
    return img.encode(img.photo(seed, (w, h)), "JPEG", quality=90, progressive=True)


def test_routing_sends_only_plain_complete_baseline_jpegs() -> None:
    from webssl_cli.preprocess.sniff import jpeg_frame
    pcfg = PreprocessConfig(56)
    assert route_to_gpu(img.make_jpeg(90, 70), pcfg)
    assert route_to_gpu(img.gray_jpeg(), pcfg)
    prog = progressive_jpeg(90, 70, 1)
    assert jpeg_frame(prog).sof == 0xC2 and jpeg_frame(img.make_jpeg(90, 70)).sof == 0xC0
    assert (jpeg_frame(prog).width, jpeg_frame(prog).height) == (90, 70)
    assert not route_to_gpu(prog, pcfg)       # nvJPEG's hardware decoder takes baseline only
    for name in ("exif6.jpg", "cmyk.jpg", "gray16.png", "rgba.png", "anim.gif"):
        assert not route_to_gpu(img.GOOD_SPECIAL[name](), pcfg), name
    for name in ("truncated.jpg", "empty.jpg", "text.jpg", "huge.jpg"):
        assert not route_to_gpu(img.BROKEN[name][0](), pcfg), name


def test_device_decode_matches_cpu_decode_rows_features_and_ledger(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    files = {f"good{i:02d}.jpg": img.make_jpeg(60 + 7 * i, 50 + 5 * i, i) for i in range(13)}
    files.update({f"prog{i}.jpg": progressive_jpeg(80, 60 + 9 * i, 20 + i) for i in range(2)})
    # data after the EOI (phone trailers, a second picture): the workers cut it off
    files.update({f"trail{i}.jpg": img.make_jpeg(70, 50 + 6 * i, 30 + i) + tail
                  for i, tail in enumerate((b"\x00\x00SEFH" + bytes(range(256)), img.make_jpeg(20, 20, 9)))})
    files.update(img.broken_and_special())
    for name, data in files.items():
        (root / name).write_bytes(data)
    cpu_out, dev_out = tmp_path / "cpu", tmp_path / "device"
    # 30 files in units of 4 with batches of 3: pieces from several units share a batch,
    # and most batches mix worker-decoded rows with raw JPEGs for the decode thread
    assert extract(config([root], cpu_out, shard_size=4, batch=3)).exit_code == 0
    res = device_decode_run(config([root], dev_out, shard_size=4, batch=3))
    assert res.exit_code == 0
    assert res.images == len(files) - len(img.BROKEN)
    assert res.failures == len(img.BROKEN)
    assert ledger(dev_out) == ledger(cpu_out) == {n: t for n, (_, t) in img.BROKEN.items()}
    cpu_keys, cpu_cls = read_features(cpu_out)
    dev_keys, dev_cls = read_features(dev_out)
    assert dev_keys == cpu_keys
    cos = (cpu_cls * dev_cls).sum(1) / np.linalg.norm(cpu_cls, axis=1) / np.linalg.norm(dev_cls, axis=1)
    assert cos.min() >= 0.999, dict(zip(dev_keys, cos.round(5)))


def test_device_decode_with_no_workers_and_one_unit(tmp_path: Path) -> None:
    """No DataLoader workers: batches come from the main process; every row still lands."""
    root = tmp_path / "jpegs"
    root.mkdir()
    for i in range(7):
        (root / f"{i}.jpg").write_bytes(img.make_jpeg(64, 64, i))
    res = device_decode_run(config([root], tmp_path / "out", workers=0, batch=5))
    assert res.exit_code == 0 and res.images == 7 and res.failures == 0
    assert 0 < res.decode_thread_seconds < res.loop_seconds
    assert f"GPU decode thread {res.decode_thread_seconds:.1f}s" in res.summary
    keys, cls = read_features(tmp_path / "out")
    assert keys == [f"{i}.jpg" for i in range(7)] and np.isfinite(cls).all()


def test_raw_jpegs_cross_from_a_worker_as_one_blob_with_their_exact_bytes(tmp_path: Path) -> None:
    """A real DataLoader worker hands over each batch's raw JPEGs packed in one tensor; the
    views the decode thread gets are byte-for-byte the files, in row order, with their
    decoded sizes."""
    from webssl_cli.config import InputConfig
    root = tmp_path / "jpegs"
    root.mkdir()
    files = {f"{i}.jpg": img.make_jpeg(60 + 9 * i, 50, i) for i in range(7)}
    files["x.png"] = img.make_png(40, 40, 1)          # decoded in the worker instead
    for name, data in files.items():
        (root / name).write_bytes(data)
    icfg = InputConfig((str(root),))
    got: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    worker_rows = []
    for b in loader_pieces(icfg, PreprocessConfig(56), 4, 1, gpu_decode=True):
        if b.raw_sizes:
            assert isinstance(b.raw_blob, torch.Tensor) and b.raw_blob.dim() == 1
            assert b.raw_blob.numel() == sum(b.raw_sizes)
            views = b.raw
            assert all(v.is_contiguous() for v in views)
            got.update({k: v.numpy().tobytes() for k, v in zip(b.raw_keys, views)})
            sizes.update(zip(b.raw_keys, b.raw_decoded))
        worker_rows += b.keys
    assert got == {k: v for k, v in files.items() if k.endswith(".jpg")}
    # each JPEG's decoded size comes along, so the decode thread parses no header to group
    assert sizes == {f"{i}.jpg": (60 + 9 * i) * 50 * 3 for i in range(7)}
    assert worker_rows == ["x.png"]


def test_decoded_images_resized_together_match_one_by_one_and_pin_size_errors() -> None:
    """decode_on_gpu resizes all decoded images in batched chunks: whatever the chunking, each
    image is within one level of the per-image path on the GPU's arithmetic (float32, rounded
    once), a size-decided error hits exactly the images of that size, and nothing is lost or
    reordered. ``batched=False`` is the per-image path itself."""
    from torchvision.io import ImageReadMode, decode_jpeg

    from tests.test_batch_resize import gpu_reference
    from webssl_cli.pipeline.gpu_decode import decode_on_gpu
    from webssl_cli.preprocess import DecodeError, preprocess
    from webssl_cli.preprocess.batch_resize import resize_crop_chunk
    from webssl_cli.preprocess.transforms import plan_resize
    pcfg = PreprocessConfig(56, max_image_pixels=100_000)
    sizes = [(90, 70), (64, 64), (90, 70), (640, 20), (90, 70), (64, 64), (640, 20), (120, 80)]
    datas = [img.make_jpeg(w, h, i) for i, (w, h) in enumerate(sizes)]
    raws = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    cpu = torch.device("cpu")
    for chunk in (10**9, 2 * 90 * 70, 1):        # one chunk; chunks of two; one image each
        images, ok, bad = decode_on_gpu(raws, pcfg, cpu, chunk_pixels=chunk)
        assert ok == [0, 1, 2, 4, 5, 7]
        assert set(bad) == {3, 6} and bad[3][0] == "ExtremeAspectRatio"
        for row, i in enumerate(ok):
            dec = decode_jpeg(raws[i], mode=ImageReadMode.RGB)
            assert (images[row].int() - gpu_reference(dec, pcfg).int()).abs().max() <= 1, i
            if chunk == 1:     # the batched path ran (it did not fall back to one by one)
                plan = plan_resize(dec.shape[-2], dec.shape[-1], pcfg)
                assert torch.equal(images[row], resize_crop_chunk([dec], [plan])[0]), i
    images, ok, bad = decode_on_gpu(raws, pcfg, cpu, batched=False)
    assert ok == [0, 1, 2, 4, 5, 7] and set(bad) == {3, 6}
    for row, i in enumerate(ok):
        assert torch.equal(images[row], preprocess(decode_jpeg(raws[i], mode=ImageReadMode.RGB),
                                                   pcfg)), i
    try:
        preprocess(decode_jpeg(raws[3], mode=ImageReadMode.RGB), pcfg)
        raise AssertionError("640x20 should exceed the pixel limit once resized")
    except DecodeError as exc:
        assert exc.error_type == bad[3][0]


def test_summary_names_the_decode_thread_when_it_is_the_bottleneck() -> None:
    from webssl_cli.pipeline.progress import Counters, summary
    now = time.perf_counter()
    c = Counters(images=1000, started=now - 12, loop_started=now - 10, first_batch=0.5,
                 model_seconds=3.0, wait_seconds=6.0, decode_thread_seconds=9.5)
    text = summary(c, workers=8)
    assert "GPU decode thread 9.5s" in text
    assert "Bottleneck: the GPU decode thread is the bottleneck" in text and "--decode cpu" in text
    c.decode_thread_seconds = 3.0          # the thread had time to spare: the workers are short
    assert "raise --num-workers" in summary(c, workers=8)
    c.decode_thread_seconds = 0.0          # --decode cpu: no such part
    assert "GPU decode thread" not in summary(c, workers=8)


# --- batched decode: bisection, out of memory, groups -------------------------------------------

CPU = torch.device("cpu")


def raw_tensors(datas: list[bytes]) -> list[torch.Tensor]:
    return [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]


def corrupt_jpeg(w: int, h: int, seed: int) -> bytes:
    """A complete baseline JPEG (valid headers, end marker) whose scan data holds a DHT marker:
    torchvision's decoder fails on the bogus table, PIL on the broken data stream."""
    data = bytearray(img.make_jpeg(w, h, seed))
    sos = data.find(b"\xff\xda")
    data[sos + 20:sos + 22] = b"\xff\xc4"
    return bytes(data)


def wrap_decode_jpeg(monkeypatch, oom_above: int | None = None,
                     check_freed: bool = False) -> list:
    """Wrap torchvision's decode_jpeg (standing in for nvJPEG's limits): record each call's
    images (a list, or one tensor) and their outputs as weak references; raise
    torch.OutOfMemoryError for lists longer than ``oom_above`` (0: every call).
    ``check_freed``: each call asserts that no earlier call's decoded image is still alive."""
    import weakref

    import torchvision.io
    real = torchvision.io.decode_jpeg
    calls: list[dict] = []

    def wrapped(data, *args, **kw):
        call = {"list": isinstance(data, list), "n": len(data) if isinstance(data, list) else 1,
                "outputs": []}
        call["bytes"] = sum(_decoded_bytes(d) for d in (data if call["list"] else [data]))
        if check_freed:
            assert all(ref() is None for c in calls for ref in c["outputs"]), \
                "decoded full-size images of an earlier call are still alive"
        calls.append(call)
        if oom_above is not None and call["n"] > oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        out = real(data, *args, **kw)
        call["outputs"] = [weakref.ref(t) for t in (out if call["list"] else [out])]
        return out
    monkeypatch.setattr(torchvision.io, "decode_jpeg", wrapped)
    return calls


def _decoded_bytes(raw: torch.Tensor) -> int:
    from webssl_cli.preprocess.sniff import jpeg_size
    w, h = jpeg_size(raw.numpy().tobytes())
    return w * h * 3


def mixed_jpegs(n: int) -> list[bytes]:
    return [img.make_jpeg(60 + 11 * (i % 5), 50 + 7 * (i % 3), i) for i in range(n)]


def test_one_corrupt_jpeg_splits_the_batch_in_halves_not_into_single_images(monkeypatch) -> None:
    """17 JPEGs, one of them corrupt: the batched call fails, halves are decoded batched until
    the bad one is alone (about 2*log2(17) calls, not 17); it alone takes the per-image
    fallback and is recorded. The 16 good ones come out as the batch of them alone gives them,
    and within one level of decoding each by itself."""
    from webssl_cli.pipeline.gpu_decode import decode_raw_batch
    pcfg = PreprocessConfig(56)
    good = mixed_jpegs(16)
    datas = good[:11] + [corrupt_jpeg(80, 60, 2)] + good[11:]
    alone = decode_raw_batch(raw_tensors(good), pcfg, CPU)
    singles = [decode_raw_batch(raw_tensors([d]), pcfg, CPU).images[0] for d in good]
    calls = wrap_decode_jpeg(monkeypatch)
    r = decode_raw_batch(raw_tensors(datas), pcfg, CPU)
    assert r.ok == [i for i in range(17) if i != 11] and set(r.bad) == {11}
    assert r.bad[11][0] == "CorruptImage" and r.fallbacks == 1
    assert alone.fallbacks == 0 and torch.equal(r.images, alone.images)
    for row, single in zip(r.images, singles):
        assert (row.int() - single.int()).abs().max() <= 1
    assert len(calls) <= 2 * 4.09 + 2, [c["n"] for c in calls]        # log2(17) = 4.09
    assert sum(not c["list"] for c in calls) == 1       # the bad one alone on the "GPU", once


def test_out_of_memory_on_long_lists_splits_them_and_records_no_failure(monkeypatch) -> None:
    """nvJPEG out of memory for lists of more than 4 images: the lists are halved until they
    fit, every image is decoded batched and equal to the unconstrained run; no failure rows."""
    from webssl_cli.pipeline.gpu_decode import decode_raw_batch
    pcfg = PreprocessConfig(56)
    raws = raw_tensors(mixed_jpegs(17))
    expected = decode_raw_batch(raws, pcfg, CPU)
    calls = wrap_decode_jpeg(monkeypatch, oom_above=4)
    r = decode_raw_batch(raws, pcfg, CPU)
    assert r.bad == {} and r.ok == list(range(17)) and r.fallbacks == 0
    assert torch.equal(r.images, expected.images)
    assert all(c["list"] for c in calls)                 # nothing went down the per-image path
    assert sum(c["n"] for c in calls if c["n"] <= 4) == 17


def test_out_of_memory_on_every_decode_call_decodes_on_the_cpu(monkeypatch) -> None:
    """nvJPEG out of memory even for one image: each image is decoded on the CPU
    (``load_sample``), not retried alone on the GPU, and none is recorded as a failure."""
    from webssl_cli.pipeline.gpu_decode import decode_raw_batch
    from webssl_cli.preprocess import load_sample
    pcfg = PreprocessConfig(56)
    datas = mixed_jpegs(5)
    calls = wrap_decode_jpeg(monkeypatch, oom_above=0)
    r = decode_raw_batch(raw_tensors(datas), pcfg, CPU)
    assert r.bad == {} and r.ok == list(range(5)) and r.fallbacks == 5
    for row, data in zip(r.images, datas):
        assert torch.equal(row, load_sample(data, pcfg))
    assert all(c["list"] for c in calls)


def test_resize_out_of_memory_even_per_image_stops_the_run_naming_the_sample(monkeypatch) -> None:
    """Out of memory in the batched resize falls back to one image at a time; if that runs out
    too, the error propagates out of the decoder (naming the sample and what to do), and no
    failure is recorded for the image."""
    import torchvision.transforms.v2.functional as F

    from webssl_cli.pipeline.device_decode import DeviceDecoder
    from webssl_cli.pipeline.loader import Batch

    def oom(*args, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
    datas = mixed_jpegs(3)
    b = Batch(0, 0, None, raw_blob=torch.frombuffer(bytearray(b"".join(datas)), dtype=torch.uint8),
              raw_sizes=[len(d) for d in datas], raw_indices=[0, 1, 2],
              raw_keys=["a.jpg", "b.jpg", "c.jpg"], raw_sources=["s"] * 3,
              raw_metas=[None] * 3)
    monkeypatch.setattr(torch, "bmm", oom)              # the batched resize's matmuls
    monkeypatch.setattr(F, "resize", oom)               # preprocess, one image at a time
    dec = DeviceDecoder(PreprocessConfig(56), CPU)
    try:
        dec.submit(b)
        dec.wait_oldest()
        with pytest.raises(WebsslError, match="'a.jpg'.*--decode cpu.*--batch-size"):
            list(dec.finished())
    finally:
        dec.close()


def test_decode_groups_bound_the_decoded_bytes_alive_at_once(monkeypatch) -> None:
    """With a group cap, each decode call's images stay under it, each group is resized (its
    full-size images freed) before the next is decoded, and the result equals the one-group
    run: same images, same order."""
    from webssl_cli.pipeline.gpu_decode import decode_raw_batch
    pcfg = PreprocessConfig(56)
    datas = mixed_jpegs(12)
    datas.insert(5, img.make_jpeg(200, 150, 1))         # above the cap: a group of its own
    raws = raw_tensors(datas)
    cap = 3 * 3 * 100 * 60
    expected = decode_raw_batch(raws, pcfg, CPU)
    calls = wrap_decode_jpeg(monkeypatch, check_freed=True)
    r = decode_raw_batch(raws, pcfg, CPU, group_bytes=cap)
    assert r.ok == expected.ok == list(range(13)) and r.bad == {} and r.fallbacks == 0
    assert torch.equal(r.images, expected.images)
    assert len(calls) > 3 and sum(c["n"] for c in calls) == 13
    assert all(c["bytes"] <= cap or c["n"] == 1 for c in calls)
    assert [c["n"] for c in calls if c["bytes"] > cap] == [1]


def test_huge_jpegs_go_to_the_cpu_workers() -> None:
    """Above GPU_DECODE_MAX_PIXELS (but within the bomb limit) a JPEG is decoded by the CPU
    workers: bounded memory on the decode thread."""
    from webssl_cli.pipeline.gpu_decode import GPU_DECODE_MAX_PIXELS
    pcfg = PreprocessConfig(56)
    big = img.huge_jpeg(7000, 6000)                     # 42 MP declared, a 64x48 file
    assert 7000 * 6000 > GPU_DECODE_MAX_PIXELS and 7000 * 6000 < pcfg.max_image_pixels
    assert not route_to_gpu(big, pcfg)
    assert route_to_gpu(big, pcfg, max_pixels=7000 * 6000)
    assert route_to_gpu(img.make_jpeg(90, 70), pcfg, max_pixels=90 * 70)
    assert not route_to_gpu(img.make_jpeg(90, 70), pcfg, max_pixels=90 * 70 - 1)


def test_per_image_fallbacks_are_counted_and_logged_once_per_decoder(caplog) -> None:
    from webssl_cli.pipeline.device_decode import DeviceDecoder
    from webssl_cli.pipeline.loader import Batch

    def batch(unit: int) -> Batch:
        datas = mixed_jpegs(4) + [corrupt_jpeg(70, 50, unit)]
        keys = [f"{unit}/{i}.jpg" for i in range(5)]
        return Batch(unit, 0, None, raw_blob=torch.frombuffer(bytearray(b"".join(datas)),
                                                              dtype=torch.uint8),
                     raw_sizes=[len(d) for d in datas], raw_indices=list(range(5)),
                     raw_keys=keys, raw_sources=["s"] * 5, raw_metas=[None] * 5)
    dec = DeviceDecoder(PreprocessConfig(56), CPU)
    got = []
    try:
        with caplog.at_level("WARNING", logger="webssl.decode"):
            for unit in range(3):
                dec.submit(batch(unit))
                dec.wait_oldest()
                got += list(dec.finished())
    finally:
        dec.close()
    assert [d.fallbacks for d in got] == [1, 1, 1]
    assert [[f.key for f in d.failures] for d in got] == [[f"{u}/4.jpg"] for u in range(3)]
    assert [d.batch.keys for d in got] == [[f"{u}/{i}.jpg" for i in range(4)] for u in range(3)]
    warnings = [r for r in caplog.records if r.name == "webssl.decode"]
    assert len(warnings) == 1 and "1 JPEG(s)" in warnings[0].getMessage()
    assert "slower" in warnings[0].getMessage()
