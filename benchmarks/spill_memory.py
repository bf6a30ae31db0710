"""Host memory of `webssl extract` writing `patches` from big tar shards: units held whole
in memory (and concatenated, then sorted, at write time) vs spilled past `--feature-memory`
and written a block at a time.

Runs the real CLI on the tiny fixture model (CPU) over generated tar shards, once per
setting, and prints the main process's peak RSS (VmHWM) and peak anonymous memory (RssAnon,
sampled every 20 ms: what cannot be reclaimed, what an OOM kill counts), the summary's peak
of features held, what was spilled, and the wall time. Then the write of one unit alone, in
a fresh process: the anonymous memory it needs over the features it writes. ``--baseline SRC`` also runs the
code in another checkout (``git worktree add /tmp/old <commit>``) as the "before" rows
(there a unit's rows are concatenated and sorted before the write, as that code did).

    PYTHONPATH=. .venv/bin/python benchmarks/spill_memory.py [--baseline /tmp/old]
"""
from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "official" / "dino-tiny"


def make_shards(folder: Path, shards: int, per_shard: int) -> None:
    rng = np.random.default_rng(0)
    for s in range(shards):
        with tarfile.open(folder / f"shard-{s:03d}.tar", "w") as tf:
            for i in range(per_shard):
                b = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(b, "JPEG")
                info = tarfile.TarInfo(f"{s:03d}_{i:05d}.jpg")
                info.size = b.tell()
                tf.addfile(info, io.BytesIO(b.getvalue()))


WRITE_ONE = """
import sys, tempfile, threading, time
import numpy as np
from webssl_cli.store import OutputLayout, UnitRows, write_unit
from webssl_cli.units import Unit
def anon():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon"))
fmt, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
chunks = [rng.standard_normal((32, 256, 64)).astype(np.float32) for _ in range(n // 32)]
order = np.argsort(rng.permutation(sum(len(c) for c in chunks)), kind="stable")
base, peak, done = anon(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)
t = threading.Thread(target=sample)
t.start()
try:
    from webssl_cli.store.ordered_rows import OrderedRows
    feats = {"patches": OrderedRows(chunks, order, (256, 64), np.float32)}
except ImportError:   # before: the rows concatenated, then sorted
    feats = {"patches": np.concatenate(chunks)[order]}
keys = [f"s/{i}" for i in range(len(order))]
write_unit(OutputLayout(tempfile.mkdtemp()), fmt, Unit(0, "tar", "/d/s.tar", "s"),
           UnitRows(keys, ["/d/s.tar"] * len(keys), feats), {})
done.set()
t.join()
print(sum(c.nbytes for c in chunks) / 2**20, (peak[0] - base) / 1024)
"""


def write_one(src: Path, fmt: str, rows: int) -> tuple[float, float]:
    """(MiB of features, MiB of anonymous memory over them at the peak) writing one unit."""
    p = subprocess.run([sys.executable, "-c", WRITE_ONE, fmt, str(rows)], check=True,
                       env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True,
                       text=True, cwd=src)
    held, over = map(float, p.stdout.split())     # sampling starts once the rows are held
    return held, over


def _status(pid: int) -> dict[str, int]:
    """kB fields of /proc/PID/status (empty once the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, _, v in (ln.partition(":") for ln in lines)
            if v.strip().endswith("kB")}


def run(src: Path, shards: Path, out: Path, resolution: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "webssl_cli", "extract",
           "--model-config", str(FIX / "spec.json"), "--weights", str(FIX / "official.pth"),
           "--resolution", str(resolution), "--device", "cpu", "--precision", "fp32",
           "--input", str(shards), "--out", str(out), "--features", "patches",
           "--out-dtype", "float32", "--batch-size", "32", "--num-workers", "2", *extra]
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True,
                             cwd=src)      # python -m puts the working folder first
        hwm = anon = 0
        while p.poll() is None:
            status = _status(p.pid)
            hwm, anon = max(hwm, status.get("VmHWM", 0)), max(anon, status.get("RssAnon", 0))
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read()
    if p.returncode != 0:
        raise SystemExit(f"extract failed ({p.returncode}):\n{stderr[-3000:]}")
    held = re.search(r"held in memory at most ([\d.]+) MiB", stderr)
    spilled = re.search(r"\(([\d.]+) MiB spilled", stderr)
    return {"rss_mib": hwm / 1024, "anon_mib": anon / 1024, "wall_s": wall,
            "held_mib": float(held.group(1)) if held else float("nan"),
            "spilled_mib": float(spilled.group(1)) if spilled else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--per-shard", type=int, default=6000)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--budget-mib", type=int, default=64)
    ap.add_argument("--baseline", type=Path, help="another checkout to run as 'before'")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards = tmp / "shards"
        shards.mkdir()
        make_shards(shards, args.shards, args.per_shard)
        tokens = (args.resolution // 14) ** 2
        unit_mib = args.per_shard * tokens * 64 * 4 / 2**20
        print(f"{args.shards} tar shards x {args.per_shard} images, patches {tokens}x64 "
              f"float32: {unit_mib:.0f} MiB of features per unit; 2 workers, batch 32, CPU")
        rows = []
        if args.baseline:
            rows.append((f"before ({args.baseline})", args.baseline, []))
        rows += [("now, never spilling (--feature-memory 100000)", ROOT,
                  ["--feature-memory", "100000"]),
                 (f"now, --feature-memory {args.budget_mib}", ROOT,
                  ["--feature-memory", str(args.budget_mib)])]
        results = []
        for i, (label, src, extra) in enumerate(rows):
            r = run(src, shards, tmp / f"out{i}", args.resolution, extra)
            results.append(r)
            print(f"{label:48s} peak RSS {r['rss_mib']:6.0f} MiB, anon {r['anon_mib']:6.0f} MiB; "
                  f"features held at most "
                  f"{r['held_mib']:7.1f} MiB  spilled {r['spilled_mib']:7.1f} MiB  "
                  f"wall {r['wall_s']:5.1f} s")
        first, last = results[0], results[-1]
        print(f"last row / first row: peak RSS {last['rss_mib'] / first['rss_mib']:.2f}x, "
              f"peak anon {last['anon_mib'] / first['anon_mib']:.2f}x, "
              f"wall {last['wall_s'] / first['wall_s']:.2f}x")
    print("writing one unit of 6000 rows of patches (256x64 float32), rows arriving shuffled:")
    for fmt in ("parquet", "npy"):
        for label, src in ([("before", args.baseline)] if args.baseline else []) + [("now", ROOT)]:
            held, over = write_one(src, fmt, 6000)
            print(f"  {fmt:8s} {label:7s} {held:.0f} MiB of features, anonymous memory over "
                  f"them at the peak: {over:.0f} MiB")


if __name__ == "__main__":
    main()
