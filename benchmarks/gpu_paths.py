"""The ``paths`` section of benchmarks/gpu_check.py: code paths that only run on CUDA and that
CPU tests cannot reach, each checked in a few seconds and reported as table rows.

- ``--attention`` kernels x dtypes: which ones ``check_backend_runs`` accepts on this GPU
  (FlashAttention and cuDNN are expected to refuse float32).
- ``--decode gpu`` with one corrupt JPEG (a stray marker in the scan data) in a batch: the
  workers' check must send it to the CPU (on an H100 on 2026-11-27 nvJPEG decoded it into
  garbage without an error); fed to nvJPEG anyway, whether the batched call flags it (then
  the bisection must pin it on that image, calls counted), and the others equal to decoding
  them alone. Likewise, in the same row, four header corruptions that libjpeg reports
  (a DHT count byte, an SOS naming undefined Huffman tables, the first DQT removed, SOS
  components 3 -> 2): each routed to the CPU?, and fed to nvJPEG in one batch with good
  ones, flagged or decoded silently?
- The loader on CUDA (``pin_memory=True``): ``next_batch(timeout)`` slices while an input
  stalls, then the bounded shutdown stopping the pin-memory thread.
- The per-batch NaN/inf check's cost next to one dino300m batch.
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import torch


def path_rows(args, dev: torch.device, table, tmp: Path, smoke_spec: dict) -> None:
    spec = smoke_spec if args.smoke else "dino300m-full2b-224"
    checks = {"attention_rows": lambda: attention_rows(args, dev, table),
              "corrupt_batch_rows": lambda: corrupt_batch_rows(args, dev, table),
              "loader_rows": lambda: loader_rows(dev, table, tmp),
              "nonfinite_rows": lambda: nonfinite_rows(args, dev, table, spec)}
    for name, check in checks.items():
        try:
            check()
        except Exception as exc:   # one failing check must not hide the others
            table.add(f"paths: {name}", f"FAILED {type(exc).__name__}: {exc}"[:200])


def attention_rows(args, dev, table) -> None:
    from webssl_cli.backbone.attention import check_backend_runs
    from webssl_cli.errors import UsageError
    for backend in ("flash", "efficient", "cudnn", "math"):
        said = []
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            try:
                check_backend_runs(backend, dev, dtype, 64)
                said.append(f"{str(dtype)[6:]} ok")
            except UsageError:
                said.append(f"{str(dtype)[6:]} refused")
        table.add(f"paths: --attention {backend}", ", ".join(said))


def _jpeg(i: int, w: int, h: int) -> bytes:
    from PIL import Image
    base = sorted(Path("examples/images").glob("*.jpg"))
    buf = io.BytesIO()
    with Image.open(base[i % len(base)]) as im:
        im.convert("RGB").resize((w, h)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _corrupt(data: bytes) -> bytes:
    """Headers and end marker intact; a DHT marker inside the scan data, 6 bytes past the SOS
    header (by its length field: 20 bytes after the SOS marker for 3 components)."""
    from webssl_cli.preprocess.jpeg_gpu_check import jpeg_scan_start
    out = bytearray(data)
    at = jpeg_scan_start(data) + 6
    out[at:at + 2] = b"\xff\xc4"
    return bytes(out)


def _segment(data: bytes, marker: int) -> int:
    """Index of the first ``marker`` segment's 0xFF, by walking the segments from SOI."""
    i = 2
    while data[i + 1] != marker:
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return i


def _patched(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


def _header_corruptions(data: bytes) -> dict[str, bytes]:
    """Corrupt headers, scan data and EOI intact, which libjpeg reports as ``CorruptImage``
    and which only the workers' header check (not the scan check) keeps from nvJPEG (as in
    tests/test_jpeg_scan_check.py)."""
    dht, sos, dqt = _segment(data, 0xC4), _segment(data, 0xDA), _segment(data, 0xDB)
    return {"DHT count byte": _patched(data, dht + 5, b"\x20"),
            "SOS undefined Huffman tables": _patched(data, sos + 6, b"\x33"),
            "first DQT removed": data[:dqt] + data[dqt + 2 + ((data[dqt + 2] << 8)
                                                              | data[dqt + 3]):],
            "SOS components 3->2": _patched(data, sos + 4, b"\x02")}


def _header_verdicts(datas: list[bytes], pcfg, dev) -> str:
    """For each header corruption of ``datas[0]``: routed to the CPU by the workers' check,
    and what nvJPEG does with it in one batch with 4 good JPEGs (the corrupt ones behind)."""
    from webssl_cli.pipeline.gpu_decode import decode_raw_batch, gpu_decoded_bytes
    variants = _header_corruptions(datas[0])
    batch = datas[1:5] + list(variants.values())
    r = decode_raw_batch([torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in batch],
                         pcfg, dev)
    said = []
    for j, (name, d) in enumerate(variants.items(), start=4):
        nv = ("flagged" if j in r.bad else "decoded SILENTLY" if j in r.ok else "lost")
        said.append(f"{name}: to CPU {gpu_decoded_bytes(d, pcfg) == 0}, nvJPEG {nv}")
    good_ok = all(j in r.ok for j in range(4))
    return f"{'; '.join(said)} (the 4 good ones beside them decoded: {good_ok})"


def corrupt_batch_rows(args, dev, table) -> None:
    """One corrupt JPEG (a stray marker in its scan data) among good ones. The worker-side
    check must route it to the CPU (there libjpeg records it); then, fed to nvJPEG anyway in
    one batch with the others: did the batched call flag it (failure) or decode it silently
    (garbage, no error: nvJPEG on an H100, 2026-11-27), and are the OTHER images equal to the
    batch without it (the corrupt position dropped before comparing). And the four header
    corruptions (:func:`_header_verdicts`), in the same row."""
    import torchvision.io

    from webssl_cli.config import PreprocessConfig
    from webssl_cli.pipeline.gpu_decode import decode_raw_batch, gpu_decoded_bytes
    n = 16 if args.smoke else 64
    k = n // 2                                        # the corrupt one's position
    datas = [_jpeg(i, 512, 384) for i in range(n)]
    datas.insert(k, _corrupt(datas[0]))
    raws = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    pcfg = PreprocessConfig(224)
    to_cpu = gpu_decoded_bytes(datas[k], pcfg) == 0
    good_to_gpu = sum(gpu_decoded_bytes(d, pcfg) > 0 for i, d in enumerate(datas) if i != k)
    real, calls = torchvision.io.decode_jpeg, []

    def counted(data, *a, **kw):
        calls.append(len(data) if isinstance(data, list) else 1)
        return real(data, *a, **kw)
    torchvision.io.decode_jpeg = counted
    try:
        t0 = time.perf_counter()
        r = decode_raw_batch(raws, pcfg, dev)
        host = time.perf_counter() - t0
        ours = list(calls)                    # this batch's calls only
        alone = decode_raw_batch(raws[:k] + raws[k + 1:], pcfg, dev)
        try:
            headers = _header_verdicts(datas, pcfg, dev)
        except Exception as exc:      # the stray-marker verdict above still reported
            headers = f"FAILED {type(exc).__name__}: {exc}"[:120]
    finally:
        torchvision.io.decode_jpeg = real
    verdict = ("flagged it" if k in r.bad else "decoded it SILENTLY (no error)" if k in r.ok
               else "lost it (neither decoded nor failed)")
    others = [j for j, p in enumerate(r.ok) if p != k]          # rows of r.images
    same = (r.images is not None and alone.images is not None
            and [p - (p > k) for p in r.ok if p != k] == alone.ok == list(range(n))
            and torch.equal(r.images[others].cpu(), alone.images.cpu()))
    table.add("paths: --decode gpu, 1 corrupt JPEG in a batch",
              f"worker check routes it to the CPU: {to_cpu} (good ones to the GPU: "
              f"{good_to_gpu}/{n}); fed to nvJPEG with the {n} others, the batched decode "
              f"{verdict}: failures {sorted(r.bad)} ({', '.join(e for e, _ in r.bad.values())}), "
              f"fallbacks {r.fallbacks}, decode calls {len(ours)} (sizes {ours[:12]}), host "
              f"{host * 1e3:.0f} ms. Header corruptions: {headers}. The stray-marker batch's "
              f"{n} others equal to the batch without it: {same}", n + 1)


def loader_rows(dev, table, tmp: Path) -> None:
    """A tar shard behind a pipe: command that stalls 3 s first, read by 2 pinned workers."""
    from tests.helpers import images as gen
    from webssl_cli.config import InputConfig, PreprocessConfig
    from webssl_cli.pipeline.loader import BatchSource
    from webssl_cli.readers import plan_units
    shard = gen.write_shards(tmp / "paths_wds", n_shards=1, per_shard=8, seed=5)[0]
    icfg = InputConfig((f"pipe:sleep 3; cat {shard}",))
    source = BatchSource(icfg, PreprocessConfig(56), batch_size=8, num_workers=2,
                         pin_memory=dev.type == "cuda")
    empty, rows, pinned, t0 = 0, 0, True, time.perf_counter()
    first = None
    try:
        for unit in plan_units(icfg):
            source.submit(unit)
        while source.outstanding:
            b = source.next_batch(timeout=0.5)
            if b is None:
                empty += 1
                continue
            if b.images is not None:
                first = first or time.perf_counter() - t0
                rows += len(b.images)
                pinned &= b.images.is_pinned() or dev.type != "cuda"
    finally:
        t1 = time.perf_counter()
        it = source._it
        source.close()
        closed = time.perf_counter() - t1
    pin = getattr(it, "_pin_memory_thread", None) if it is not None else None
    table.add("paths: loader on CUDA, stalled pipe: input",
              f"{empty} empty 0.5 s slices, first rows after {first or 0:.1f} s, {rows} rows, "
              f"pinned {pinned}, close {closed:.2f} s, pin thread alive after close: "
              f"{bool(pin and pin.is_alive())}", rows)


def nonfinite_rows(args, dev, table, spec) -> None:
    from webssl_cli.backbone.factory import create_model
    from webssl_cli.model_step import ModelStep, nonfinite_rows as check
    from webssl_cli.model_step.features import parse_features
    from benchmarks.gpu_timing import sync, time_call
    cuda = dev.type == "cuda"
    model = create_model(spec, random_init=True, device=dev,
                         dtype=torch.bfloat16 if cuda else None)
    res, bs = model.spec.img_size, (8 if args.smoke else 256)
    feats = parse_features("cls,patch_mean", model.spec.depth, (res // 14, res // 14))
    step = ModelStep(model, feats, dev, "bf16" if cuda else "fp32", (0.485, 0.456, 0.406),
                     (0.229, 0.224, 0.225))
    x = torch.randint(0, 256, (bs, 3, res, res), dtype=torch.uint8, device=dev)
    plain = time_call(lambda: step(x), bs, dev, args.seconds)
    checked = time_call(lambda: check(step(x)), bs, dev, args.seconds)
    out = step(x)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(20):
        check(out)
    sync(dev)
    alone = (time.perf_counter() - t0) / 20
    table.add(f"paths: NaN/inf check, {spec if isinstance(spec, str) else 'smoke'}",
              f"step {plain:.0f} img/s, step + check {checked:.0f} img/s "
              f"({checked / plain:.3f}x); check alone {alone * 1e3:.2f} ms per batch", bs,
              checked)
