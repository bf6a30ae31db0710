"""The commit protocol: one winner per unit, losers never touch the winner's files,
and a committer killed between its commit intent and its done-record is rolled forward."""
from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pyarrow.parquet as pq

from webssl_cli.store import (DoneRecord, OutputLayout, UnitRows, commit_unit, done_units,
                              get_status, load_plan, read_features, save_or_load_plan,
                              sha256_file,
                              write_failures, write_unit)
from webssl_cli.store.staging import sweep_staging
from tests.helpers.race import race_two
from webssl_cli.units import Failure, Unit

ROUNDS = 5


def _units(n: int) -> list[Unit]:
    return [Unit(index=i, kind="tar", source=f"/d/s{i}.tar", name=f"s{i:06d}") for i in range(n)]


def _rows(unit: Unit, value: float, n: int = 3) -> UnitRows:
    return UnitRows(keys=[f"{unit.name}/{i}" for i in range(n)], sources=[unit.source] * n,
                    features={"cls": np.full((n, 4), value, np.float16),
                              "patches": np.full((n, 2, 4), value, np.float16)})


def _record(unit, rows, files, ledger, owner):
    return DoneRecord(unit.id, unit.name, unit.source, len(rows), 1 if ledger else 0, files,
                      ledger, owner, 0.0)


def _committer(out: str, fmt: str, owner: str, value: float, barrier, results) -> None:
    layout = OutputLayout(out)
    units = save_or_load_plan(layout, lambda: [], is_planner=False, wait_seconds=30)
    for r in range(ROUNDS):
        unit = units[r]
        rows = _rows(unit, value)
        files = write_unit(layout, fmt, unit, rows, {"owner": owner})
        ledger = write_failures(layout, unit, [Failure("k", "s", "decode", "E", owner)])
        barrier.wait()                         # both have staged; commit at the same time
        won = commit_unit(layout, _record(unit, rows, files, ledger, owner))
        results.put((r, owner, won, {f.path: f.sha256 for f in files + [ledger]}))


def _race(tmp_path, fmt):
    out = str(tmp_path / "out")
    layout = OutputLayout(out)
    save_or_load_plan(layout, lambda: _units(ROUNDS), is_planner=True, wait_seconds=1)
    got = race_two(_committer, lambda i: (out, fmt, f"rank{i}", float(i + 1)), 2 * ROUNDS)
    return layout, got


def test_two_processes_commit_the_same_unit_exactly_one_wins(tmp_path):
    for fmt in ("parquet", "npy"):
        layout, got = _race(tmp_path / fmt, fmt)
        done = done_units(layout)
        for r in range(ROUNDS):
            wins = [(owner, shas) for rr, owner, won, shas in got if rr == r and won]
            assert len(wins) == 1, got
            owner, shas = wins[0]
            uid = f"{r:06d}"
            assert done[uid].rank == owner
            assert {f.path: f.sha256 for f in done[uid].all_files()} == shas
            for path, sha in shas.items():         # on disk: exactly the winner's bytes
                assert sha256_file(layout.abs(path))[1] == sha
            ledger = json.loads(layout.failures_path(uid).read_text())
            assert ledger["message"] == owner
        keys, cls = read_features(layout.out_dir, "cls")
        assert len(keys) == 3 * ROUNDS
        winners_value = {f"{r:06d}": float(owner[-1]) + 1 for r, owner, won, _ in got if won}
        for r in range(ROUNDS):
            assert np.all(cls[3 * r: 3 * r + 3] == winners_value[f"{r:06d}"])
        assert not any(layout.staging_dir.iterdir())            # losers cleaned up
        assert get_status(layout.out_dir).missing_files == []


_DIES_AFTER_INTENT = """
import os, signal, sys
import numpy as np
from webssl_cli.store import (DoneRecord, OutputLayout, UnitRows, commit_unit, load_plan,
                              write_unit)
import webssl_cli.store.commit as commit
layout = OutputLayout(sys.argv[1])
unit = load_plan(layout)[0]
rows = UnitRows(keys=["a", "b"], sources=["s", "s"], features={"cls": np.eye(2, 4, dtype=np.float16)})
files = write_unit(layout, sys.argv[2], unit, rows, {})
print(sorted(f.sha256 for f in files), flush=True)
# crash exactly after the commit intent is created, before any rename / done-record
commit.roll_forward = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
commit_unit(layout, DoneRecord(unit.id, unit.name, unit.source, 2, 0, files, None, "dying", 0.0))
"""


def test_committer_killed_after_intent_is_rolled_forward(tmp_path):
    import subprocess
    import sys
    for fmt in ("parquet", "npy"):
        layout = OutputLayout(tmp_path / fmt)
        units = save_or_load_plan(layout, lambda: _units(2), is_planner=True, wait_seconds=1)
        proc = subprocess.run([sys.executable, "-c", _DIES_AFTER_INTENT, str(layout.out_dir), fmt],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        shas = proc.stdout.strip()
        assert layout.commit_path("000000").exists() and not layout.done_path("000000").exists()
        assert not list(layout.out_dir.glob("*.parquet")) and not (layout.out_dir / "cls").exists()
        assert get_status(layout.out_dir).pending_commits == ["000000"]
        # a second rank that computed the same unit loses: the dead winner's intent stands
        rows = _rows(units[0], 9.0, n=2)
        files = write_unit(layout, fmt, units[0], rows, {})
        assert commit_unit(layout, _record(units[0], rows, files, None, "late")) is False
        # the next run start finishes the interrupted commit
        done = done_units(layout)
        assert list(done) == ["000000"] and done["000000"].rank == "dying"
        assert str(sorted(f.sha256 for f in done["000000"].files)) == shas
        keys, cls = read_features(layout.out_dir)
        assert keys == ["a", "b"] and np.array_equal(cls, np.eye(2, 4, dtype=np.float16))
        assert get_status(layout.out_dir).pending_commits == []
        assert not any(layout.staging_dir.iterdir())


def test_roll_forward_is_idempotent_after_partial_moves(tmp_path):
    layout = OutputLayout(tmp_path / "out")
    units = save_or_load_plan(layout, lambda: _units(1), is_planner=True, wait_seconds=1)
    rows = _rows(units[0], 2.0)
    files = write_unit(layout, "npy", units[0], rows, {})
    intent = {"record": _record(units[0], rows, files, None, "x").to_dict(),
              "moves": [{"staged": f.staged, "path": f.path, "bytes": f.bytes} for f in files]}
    from webssl_cli.store import exclusive_create
    from webssl_cli.store.records import dumps
    assert exclusive_create(layout.commit_path("000000"), dumps(intent))
    first = files[0]                                   # the dead committer moved one file
    layout.abs(first.path).parent.mkdir(parents=True, exist_ok=True)
    os.replace(layout.abs(first.staged), layout.abs(first.path))
    done = done_units(layout)
    assert done["000000"].rows == 3
    for f in files:
        assert sha256_file(layout.abs(f.path))[1] == f.sha256
    assert pq.read_table(layout.npy_metadata_path("000000")).num_rows == 3


_DIES_BEFORE_COMMIT = """
import sys, time
import numpy as np
from webssl_cli.store import OutputLayout, UnitRows, load_plan, write_unit
layout = OutputLayout(sys.argv[1])
unit = load_plan(layout)[0]
rows = UnitRows(keys=["a"], sources=["s"], features={"cls": np.ones((1, 4), np.float16)})
write_unit(layout, "parquet", unit, rows, {})
print("staged", flush=True)
time.sleep(120)
"""


def test_rank_killed_before_commit_leaves_nothing_visible(tmp_path):
    import subprocess
    import sys
    layout = OutputLayout(tmp_path / "out")
    save_or_load_plan(layout, lambda: _units(1), is_planner=True, wait_seconds=1)
    proc = subprocess.Popen([sys.executable, "-c", _DIES_BEFORE_COMMIT, str(layout.out_dir)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "staged"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not list(layout.out_dir.glob("*.parquet"))
    (dead,) = list(layout.staging_dir.iterdir())
    assert sweep_staging(layout, set()) == [dead.name]     # its writer is gone: swept at once
    assert done_units(layout) == {} and read_features(layout.out_dir)[0] == []


def test_staging_of_a_live_or_unknown_writer_is_swept_only_when_old(tmp_path):
    layout = OutputLayout(tmp_path / "out")
    save_or_load_plan(layout, lambda: _units(1), is_planner=True, wait_seconds=1)
    rows = UnitRows(keys=["a"], sources=["s"], features={"cls": np.ones((1, 4), np.float16)})
    write_unit(layout, "parquet", load_plan(layout)[0], rows, {})   # this (live) process
    old_style = layout.staging_dir / "000000.otherhost-77-0a1b2c3d"  # an older version's name
    old_style.mkdir()
    (old_style / "part-000000.parquet").write_bytes(b"x")
    leftovers = sorted(layout.staging_dir.iterdir())
    assert len(leftovers) == 2
    assert sweep_staging(layout, set()) == []                     # recent: may be a live writer
    past = time.time() - 7200
    for leftover in leftovers:
        for root, dirs, files in os.walk(leftover):
            for name in dirs + files:
                os.utime(os.path.join(root, name), (past, past))
        os.utime(leftover, (past, past))
    assert sorted(sweep_staging(layout, set())) == [p.name for p in leftovers]
    assert not any(layout.staging_dir.iterdir())
