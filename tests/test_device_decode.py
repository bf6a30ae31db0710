"""`--decode gpu`'s pipeline (routing in the workers, the decode thread, merging, failure
accounting) run end to end on a CPU device: the same code the GPU runs, minus the streams."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from tests.extract_helpers import config
from tests.helpers import images as img
from webssl_cli import extract, read_features
from webssl_cli.config import PreprocessConfig
from webssl_cli.distributed import detect_rank
from webssl_cli.distributed.signals import StopFlag
from webssl_cli.pipeline.gpu_decode import route_to_gpu
from webssl_cli.pipeline.runner import RankRun
from webssl_cli.pipeline.setup import prepare
from webssl_cli.store import OutputLayout, done_units


def device_decode_run(cfg):
    """What `webssl extract --decode gpu` runs, on the CPU device."""
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, decode="gpu"))
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
    views the decode thread gets are byte-for-byte the files, in row order."""
    from webssl_cli.config import InputConfig
    from webssl_cli.pipeline.loader import BatchSource
    from webssl_cli.readers import plan_units
    root = tmp_path / "jpegs"
    root.mkdir()
    files = {f"{i}.jpg": img.make_jpeg(60 + 9 * i, 50, i) for i in range(7)}
    files["x.png"] = img.make_png(40, 40, 1)          # decoded in the worker instead
    for name, data in files.items():
        (root / name).write_bytes(data)
    icfg = InputConfig((str(root),))
    source = BatchSource(icfg, PreprocessConfig(56), batch_size=4, num_workers=1,
                         pin_memory=False, gpu_decode=True)
    got: dict[str, bytes] = {}
    worker_rows = []
    try:
        for unit in plan_units(icfg):
            source.submit(unit)
        while source.outstanding:
            b = source.next_batch()
            if b.raw_sizes:
                assert isinstance(b.raw_blob, torch.Tensor) and b.raw_blob.dim() == 1
                assert b.raw_blob.numel() == sum(b.raw_sizes)
                views = b.raw
                assert all(v.is_contiguous() for v in views)
                got.update({k: v.numpy().tobytes() for k, v in zip(b.raw_keys, views)})
            worker_rows += b.keys
    finally:
        source.close()
    assert got == {k: v for k, v in files.items() if k.endswith(".jpg")}
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
