"""The ``paths`` section of benchmarks/gpu_check.py: code paths that only run on CUDA and that
CPU tests cannot reach, each checked in a few seconds and reported as table rows.

- ``--attention`` kernels x dtypes: which ones ``check_backend_runs`` accepts on this GPU
  (FlashAttention and cuDNN are expected to refuse float32).
- ``--decode gpu`` with one corrupt JPEG in a batch: nvJPEG's batched call must fail
  catchably and the bisection must pin the failure on that image (calls counted), the
  others equal to decoding them alone.
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
    """Headers and end marker intact; a DHT marker inside the scan data."""
    out = bytearray(data)
    sos = out.find(b"\xff\xda")
    out[sos + 20:sos + 22] = b"\xff\xc4"
    return bytes(out)


def corrupt_batch_rows(args, dev, table) -> None:
    import torchvision.io

    from webssl_cli.config import PreprocessConfig
    from webssl_cli.pipeline.gpu_decode import decode_raw_batch
    n = 16 if args.smoke else 64
    datas = [_jpeg(i, 512, 384) for i in range(n)]
    datas.insert(n // 2, _corrupt(datas[0]))
    raws = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    pcfg = PreprocessConfig(224)
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
        alone = decode_raw_batch(raws[:n // 2] + raws[n // 2 + 1:], pcfg, dev)
    finally:
        torchvision.io.decode_jpeg = real
    same = (r.images is not None and alone.images is not None
            and torch.equal(r.images.cpu(), alone.images.cpu()))
    table.add("paths: --decode gpu, 1 corrupt JPEG in a batch",
              f"{n + 1} JPEGs: failures {sorted(r.bad)} ({', '.join(e for e, _ in r.bad.values())}), "
              f"fallbacks {r.fallbacks}, decode calls {len(ours)} "
              f"(sizes {ours[:12]}), host {host * 1e3:.0f} ms, others equal to the batch "
              f"without it: {same}", n + 1)


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
