"""Cost of one claim as the number of units grows (the runner's claim loop, store only).

An output folder of N units whose first N - 50 are done (real done-records and commit
intents on disk) is claimed from, the way a rank claims its next unit:

- "listing per claim, walk from unit 0": a fresh listing of done/commits before every claim
  and ``claim_next`` walking the plan from its start (the runner until 2026-11-27);
- "cached listing, cursor": the listing reused (``pipeline/runner.py not_to_claim``, at most
  every CLAIM_VIEW_S) and ``claim_next`` starting after the last claim.

    PYTHONPATH=. .venv/bin/python benchmarks/claim_scale.py --units 2000,10000,20000
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from webssl_cli.store import ClaimStore, DoneRecord, OutputLayout, done_units
from webssl_cli.units import Unit

CLAIMS = 20


def folder(root: Path, n: int) -> tuple[OutputLayout, list[Unit]]:
    layout = OutputLayout(root / f"o{n}")
    layout.ensure_dirs()
    units = [Unit(i, "tar", f"/x/shard-{i:07d}.tar", f"shard-{i:07d}") for i in range(n)]
    for u in units[:n - 50]:
        rec = DoneRecord(u.id, u.name, u.source, 1, 0, [], None, "r0", 0.0).to_dict()
        layout.done_path(u.id).write_text(json.dumps(rec))
        layout.commit_path(u.id).write_text(json.dumps({"record": rec, "moves": []}))
    return layout, units


def per_claim(layout: OutputLayout, units: list[Unit], cached: bool) -> float:
    claims = ClaimStore(layout, f"bench-{cached}", 300)
    view = set(done_units(layout))          # warm: records parsed once per process
    cursor = 0
    t0 = time.perf_counter()
    for _ in range(CLAIMS):
        if not cached:
            view = set(done_units(layout))
        unit = claims.claim_next(units, view, cursor if cached else 0)
        assert unit is not None
        cursor = unit.index + 1
    seconds = (time.perf_counter() - t0) / CLAIMS
    for uid in list(claims.held):
        claims.release(uid)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", default="2000,10000,20000")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="claim-scale-"))
    print("| units (50 open) | listing per claim, walk from 0 | cached listing, cursor | ratio |")
    print("|---|---|---|---|")
    try:
        for n in map(int, args.units.split(",")):
            layout, units = folder(root, n)
            old = per_claim(layout, units, cached=False)
            new = per_claim(layout, units, cached=True)
            print(f"| {n} | {old * 1e3:.1f} ms | {new * 1e3:.2f} ms | {old / new:.0f}x |",
                  flush=True)
            shutil.rmtree(layout.out_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
