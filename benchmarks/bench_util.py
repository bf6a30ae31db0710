"""Shared helpers of the CPU benchmarks: machine facts, isolated runs, peak memory, timing.

``python -m benchmarks.bench_util MODULE KWARGS_JSON RESULT_PATH`` runs ``MODULE.run(**kwargs)``
in a fresh interpreter and writes its returned dict as JSON, so that each benchmark starts
with a clean heap, its own thread settings and its own peak-RSS counter.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def machine_info() -> dict[str, Any]:
    import torch
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
                                 if f in have)
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = 0
    return {"nproc": os.cpu_count(), "cpu": cpu, "cpu_flags": flags, "ram_bytes": mem,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform()}


def max_rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """Peak resident set size (Linux reports KiB)."""
    return resource.getrusage(who).ru_maxrss * 1024


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (RssAnon, RssFile, VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class AnonPeak(threading.Thread):
    """Samples RssAnon every few ms: the private memory a load really needs (mmap'd file pages
    that are only read count in ru_maxrss but can be dropped by the kernel at any time)."""

    def __init__(self, every: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.every, self.peak_kib, self.stop = every, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak_kib = max(self.peak_kib, status_kib("RssAnon"))
            time.sleep(self.every)

    def __enter__(self) -> "AnonPeak":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join()
        self.peak_kib = max(self.peak_kib, status_kib("RssAnon"))


def clean_cmd(cmd: list[str]) -> list[str]:
    """``cmd`` run as a grandchild through ``sh``, so its ``ru_maxrss`` starts clean.

    Linux carries the parent's peak RSS into a child's ``ru_maxrss`` across fork + exec (the
    forked copy of the parent's memory is the "old mm" at exec). ``sh`` is small, and it forks
    the command (the trailing ``exit`` keeps it from exec'ing it in place).
    """
    return ["sh", "-c", '"$@"; exit $?', "sh", *cmd]


def best_of(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Interleaved timing: best wall seconds per call of each function.

    Each round calls every function once, in an order rotated by one each round (a, b, c;
    b, c, a; ...), so load from other work and warm-up effects hit all sides alike.
    """
    names = list(fns)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    best = {k: float("inf") for k in fns}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[k]()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def run_isolated(module: str, kwargs: dict[str, Any] | None = None,
                 timeout: float = 1800) -> dict[str, Any]:
    """``benchmarks.<module>.run(**kwargs)`` in a fresh interpreter; its dict result."""
    with tempfile.TemporaryDirectory(prefix="webssl-bench-") as d:
        out = Path(d) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.bench_util", module, json.dumps(kwargs or {}),
               str(out)]
        proc = subprocess.run(cmd, cwd=ROOT, timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"benchmark {module} failed (exit {proc.returncode}); "
                               f"rerun it alone: {' '.join(cmd[:3])} {module} '{cmd[4]}' OUT.json")
        return json.loads(out.read_text())


def main(argv: list[str]) -> None:
    module, kwargs, out = argv[0], json.loads(argv[1]), Path(argv[2])
    mod = importlib.import_module(f"benchmarks.{module}")
    result = mod.run(**kwargs)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    os.replace(tmp, out)



SIZES = ((500, 375), (640, 480), (800, 600), (1024, 768), (768, 1024), (375, 500))


def make_jpegs(folder: Path, n: int, sizes: tuple[tuple[int, int], ...] = SIZES,
               seed: int = 0) -> list[Path]:
    """``n`` JPEGs of real photo sizes in ``folder`` (the example photos resized, plus noise,
    quality 90, so each file is distinct and decodes like a camera image)."""
    import io

    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    photos = [Image.open(p).convert("RGB") for p in sorted((ROOT / "examples" / "images").glob("*.jpg"))]
    rng = np.random.default_rng(seed)
    bases: dict[tuple[int, int], np.ndarray] = {}
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        key = (i % len(photos), w * 10000 + h)
        if key not in bases:
            bases[key] = np.asarray(photos[key[0]].resize((w, h), Image.BICUBIC), dtype=np.int16)
        noisy = np.clip(bases[key] + rng.integers(-6, 7, bases[key].shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, "JPEG", quality=90)
        p = folder / f"img_{i:05d}.jpg"
        p.write_bytes(buf.getvalue())
        paths.append(p)
    return paths


if __name__ == "__main__":
    main(sys.argv[1:])
