"""Writes on the background thread: bounded (a slow disk slows the model down instead of
filling memory) and failing fast (the first failed write stops the run)."""
from __future__ import annotations

import dataclasses
import resource
import subprocess
import threading
from pathlib import Path

import pytest

from tests.extract_helpers import cli_args, config
from tests.helpers import images as img
from tests.helpers.cli import cli_here, run_cli
from webssl_cli import extract, read_features
from webssl_cli.store import OutputLayout, done_units
from webssl_cli.pipeline.held_memory import HeldFeatures, available_memory
from webssl_cli.pipeline.write_queue import WriteQueue


def test_submit_blocks_while_more_than_ahead_writes_wait() -> None:
    q = WriteQueue(ahead=1)
    gate = threading.Event()
    written: list[int] = []

    def write(i: int):
        def fn() -> None:
            gate.wait(10)
            written.append(i)
        return fn

    q.submit(write(0))          # running (blocked on the gate)
    q.submit(write(1))          # waiting: 1 = ahead
    third = threading.Thread(target=q.submit, args=(write(2),))
    third.start()
    third.join(0.3)
    assert third.is_alive() and written == []      # the main loop is held back
    gate.set()
    third.join(10)
    assert not third.is_alive()
    q.drain()
    assert written == [0, 1, 2] and len(q) == 0 and q.wait_seconds >= 0.2
    assert q.close(cancel=False) is None


def test_a_failed_write_is_raised_at_the_next_submit_and_close_reports_it() -> None:
    q = WriteQueue(ahead=2)

    def fail() -> None:
        raise OSError(28, "No space left on device")

    q.submit(fail)
    q.futures[0].exception(10)                     # let it run and fail
    with pytest.raises(OSError, match="No space left"):
        q.submit(lambda: None)
    q.submit(fail)
    q.futures[-1].exception(10)
    assert isinstance(q.close(cancel=False), OSError)


def test_close_with_cancel_drops_writes_not_started() -> None:
    q = WriteQueue(ahead=5)
    gate, ran = threading.Event(), []
    q.submit(lambda: gate.wait(10))
    for i in range(3):
        q.submit(lambda i=i: ran.append(i))
    threading.Timer(0.2, gate.set).start()
    assert q.close(cancel=True) is None and ran == []


def test_extract_stops_at_the_first_failed_write_and_a_rerun_finishes(tmp_path: Path) -> None:
    """A real write failure: files over RLIMIT_FSIZE fail with EFBIG. Shard 1 is the only
    one whose output exceeds the limit; the run must stop there (exit 1, a message naming
    the unit and what to check), not grind through every other shard first."""
    shards = tmp_path / "shards"
    img.write_shards(shards, 1, 2, prefix="a", seed=1)
    img.write_shards(shards, 1, 60, prefix="b", seed=2)
    img.write_shards(shards, 12, 2, prefix="c", seed=3)
    out = tmp_path / "out"
    args = cli_args([shards], out, "--features", "patches", "--num-workers", "0",
                    "--batch-size", "2")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (96 * 1024, 96 * 1024))

    p = run_cli(args, preexec_fn=limit)
    assert p.returncode == 1, p.stderr[-2000:]
    assert "writing unit" in p.stderr and "b-000000" in p.stderr
    assert "File too large" in p.stderr and "rerun the same command" in p.stderr
    assert "Traceback" not in p.stderr
    done = done_units(OutputLayout(out))
    # of 14 units: the failure surfaces at the first submit after it; small units finished
    # while the failing write ran may have queued past the count bound (byte allowance)
    assert 1 <= len(done) <= 8, sorted(r.unit_name for r in done.values())
    assert all(r.unit_name != "b-000000.tar" for r in done.values())

    p = cli_here(args)
    assert p.returncode == 0, p.stderr[-2000:]
    keys, patches = read_features(out, "patches")
    assert len(keys) == len(set(keys)) == 2 + 60 + 24 and patches.shape[1:] == (16, 64)


def test_features_held_in_memory_are_released_as_units_are_written(tmp_path: Path) -> None:
    """A 60-row unit then twelve 2-row units, one at a time: the peak is the big unit plus
    the few small ones in flight or queued behind its write, not everything (which is what
    it would be if written units were not released)."""
    shards = tmp_path / "shards"
    img.write_shards(shards, 1, 60, prefix="b", seed=2)
    img.write_shards(shards, 12, 2, prefix="c", seed=3)
    cfg = config([shards], tmp_path / "out", features=("patches",), workers=0, batch=2)
    # 1 MiB: no spilling, and finished units queue past the count bound only within 256 KiB
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, feature_memory_mib=1))
    res = extract(cfg)
    assert res.exit_code == 0 and res.images == 84
    row = 16 * 64 * 4                      # patches, 16 tokens x 64 dims, float32
    assert 60 * row <= res.peak_feature_bytes <= 66 * row, res.peak_feature_bytes / row
    assert f"at most {res.peak_feature_bytes / 2**20:.1f} MiB" in res.summary


def test_held_features_peak_and_one_warning_past_half_the_available_memory() -> None:
    said: list[str] = []
    held = HeldFeatures(available=1000, warn=said.append)
    held.add(400)
    held.add(100)
    assert said == []                      # 500 is not over half of 1000
    held.add(1)
    held.add(300)
    held.release(700)
    held.add(600)
    assert held.bytes == 701 and held.peak == 801
    assert len(said) == 1 and "--shard-size" in said[0]
    avail = available_memory()
    assert avail is None or avail > 0


def _own_cgroup_v1_memory_dir() -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.strip().split(":", 2)
        if "memory" in controllers.split(","):
            d = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return d if (d / "memory.limit_in_bytes").exists() else None
    return None


def test_available_memory_honours_the_cgroup_limit_of_the_process(tmp_path: Path) -> None:
    """A real cgroup (v1 memory controller, as on this machine) with a 3 GiB limit: a process
    inside it sees at most 3 GiB available, whatever the host has free."""
    import os
    import sys
    parent = _own_cgroup_v1_memory_dir()
    if parent is None or not os.access(parent, os.W_OK):
        pytest.skip("no writable cgroup v1 memory controller here")
    cg = parent / f"webssl-test-{os.getpid()}"
    try:
        cg.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup: {exc}")
    try:
        (cg / "memory.limit_in_bytes").write_text(str(3 * 2**30))

        def join() -> None:
            (cg / "cgroup.procs").write_text(str(os.getpid()))

        code = ("from webssl_cli.pipeline.held_memory import available_memory as a; print(a())")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, preexec_fn=join)
        assert p.returncode == 0, p.stderr
        inside = int(p.stdout)
        assert 0 < inside <= 3 * 2**30
        host = available_memory()
        assert host is not None and (host > 3 * 2**30 or host >= inside)
    finally:
        cg.rmdir()
