"""Features past the memory budget spill to disk and are written from there, block by block.

A unit's rows used to sit in memory until the unit was written, then be concatenated and
sorted (two more copies): with ``patches`` on big tar shards the host ran out of memory.
These tests run the real pipeline (tiny fixture model, real tar shards and folders, real
processes for the kill) and check that spilled units give the same files, that no spool
outlives its unit, and that a killed run's spool is swept.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import webssl_cli.store.writers as writers
from tests.extract_helpers import cli_args, config
from tests.helpers.cli import WEBSSL, child_env
from tests.helpers.images import make_jpeg, write_shards
from tests.helpers.procs import naming
from webssl_cli import extract, read_features
from webssl_cli.config_checks import check_config
from webssl_cli.errors import UsageError
from webssl_cli.pipeline.held_memory import HeldFeatures
from webssl_cli.pipeline.spill import Spiller, spill_budget
from webssl_cli.pipeline.unit_state import UnitState
from webssl_cli.pipeline.write_queue import WriteQueue
from webssl_cli.pipeline.spool import SpoolRows, UnitSpool
from webssl_cli.store import (OutputLayout, UnitRows, done_units, list_unit_failures,
                              read_done_records, write_unit)
from webssl_cli.store.ordered_rows import OrderedRows
from webssl_cli.units import Unit

FEATURES = ("cls", "patches", "layers:2")


def _pieces(rng, sizes, row_shape, dtype, tmp_path, monkeypatch):
    """Arrays of the given sizes; the first one appended to a real unit spool in two
    spills and read back from it (in windows of 3 rows, so gathers span several reads)."""
    out = [rng.standard_normal((n, *row_shape)).astype(dtype) for n in sizes]
    spool = UnitSpool(OutputLayout(tmp_path / "out"), "000000")
    spool.append({"f": [out[0][:2]]})
    spool.append({"f": [out[0][2:]]})
    monkeypatch.setattr(SpoolRows, "WINDOW", 3 * out[0][0].nbytes)
    out[0] = spool.arrays({"f": row_shape}, dtype)["f"]
    assert isinstance(out[0], SpoolRows)
    return out, spool


@pytest.mark.parametrize("shuffle", [False, True])
def test_ordered_rows_blocks_equal_concatenating_then_sorting(tmp_path, monkeypatch,
                                                               shuffle) -> None:
    rng = np.random.default_rng(3)
    pieces, spool = _pieces(rng, [11, 0, 7, 1, 9], (3, 2), np.float16, tmp_path, monkeypatch)
    n = sum(len(p) for p in pieces)
    order = rng.permutation(n) if shuffle else np.arange(n)
    whole = np.concatenate([p[0:len(p)] for p in pieces])[order]
    rows = OrderedRows(pieces, order, (3, 2), np.float16)
    assert rows.shape == whole.shape and rows.ndim == 3 and len(rows) == n
    for step in (1, 4, n):
        got = np.concatenate([rows[a:a + step] for a in range(0, n, step)])
        assert np.array_equal(got, whole)
    assert rows[n:n].shape == (0, 3, 2)
    folder = spool.folder
    spool.remove()
    assert not folder.exists()


def test_ordered_rows_refuses_pieces_that_do_not_fit() -> None:
    a = np.zeros((2, 4), np.float16)
    with pytest.raises(ValueError, match="3 rows ordered but the pieces hold 2"):
        OrderedRows([a], np.arange(3), (4,), np.float16)
    with pytest.raises(ValueError, match="does not hold rows of shape"):
        OrderedRows([a], np.arange(2), (4,), np.float32)
    with pytest.raises(TypeError, match="blocks"):
        OrderedRows([a], np.arange(2), (4,), np.float16)[[0, 1]]


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_block_writes_give_the_bytes_of_whole_arrays(tmp_path, monkeypatch, fmt) -> None:
    """The same rows given as arrays or as shuffled pieces write identical files; small
    blocks (row groups of a few rows) read back as the rows."""
    monkeypatch.setattr(writers, "ROW_GROUP_BYTES", 300)
    rng = np.random.default_rng(5)
    n = 23
    feats = {"cls": rng.standard_normal((n, 8)).astype(np.float16),
             "patches": rng.standard_normal((n, 6, 8)).astype(np.float16)}
    perm = rng.permutation(n)                       # arrival order: row perm[i] came i-th
    order = np.argsort(perm)
    pieces = {k: [v[perm[:10]], v[perm[10:11]], v[perm[11:]]] for k, v in feats.items()}
    unit = Unit(index=0, kind="tar", source="/d/s.tar", name="s")
    keys, sources = [f"s/{i:03d}" for i in range(n)], ["/d/s.tar"] * n
    files = {}
    for label, fs in (("arrays", feats),
                      ("pieces", {k: OrderedRows(p, order, v.shape[1:], v.dtype)
                                  for (k, p), v in zip(pieces.items(), feats.values())})):
        layout = OutputLayout(tmp_path / label)
        infos = write_unit(layout, fmt, unit, UnitRows(keys, sources, fs), {"p": 1})
        files[label] = {i.path: layout.abs(i.staged).read_bytes() for i in infos}
    assert files["arrays"] == files["pieces"]
    staged = {i.path: layout.abs(i.staged) for i in infos}
    if fmt == "npy":
        assert np.array_equal(np.load(staged["patches/000000.npy"]), feats["patches"])
        meta = pq.ParquetFile(staged["metadata/000000.parquet"])
        assert meta.read().column("key").to_pylist() == keys
    else:
        pf = pq.ParquetFile(staged["part-000000.parquet"])
        assert pf.metadata.num_row_groups > 3
        assert pf.read().column("key").to_pylist() == keys


def _spill_cfg(cfg, mib):
    return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime,
                                                                feature_memory_mib=mib))


def _staging_left(out: Path) -> list[str]:
    staging = out / "_webssl" / "staging"
    return sorted(os.listdir(staging)) if staging.exists() else []


@pytest.mark.parametrize("kind", ["tar", "folder"])
def test_spilled_units_are_written_as_units_held_in_memory(tmp_path, kind) -> None:
    """Tar shards (one worker per unit, rows in order) and a folder cut into units read by
    two workers each (rows interleaved): spilling every batch (--feature-memory 0) gives
    the keys and features of a run that spilled nothing, and leaves no spool behind."""
    if kind == "tar":
        inputs = [write_shards(tmp_path / "in", n_shards=3, per_shard=9, seed=2)[0].parent]
        shard_size = 10_000
    else:
        folder = tmp_path / "in"
        folder.mkdir()
        for i in range(22):
            (folder / f"img{i:02d}.jpg").write_bytes(make_jpeg(40 + i, 50, seed=i))
        inputs, shard_size = [folder], 10
    results = {}
    for label, mib in (("memory", None), ("spilled", 0)):
        out = tmp_path / label
        cfg = config(inputs, out, features=FEATURES, workers=2, batch=4, shard_size=shard_size)
        res = extract(_spill_cfg(cfg, mib))
        assert res.exit_code == 0, res.summary
        assert _staging_left(out) == []
        results[label] = res
        for f in FEATURES:
            results[label, f] = read_features(out, f)
    assert results["memory"].spilled_bytes == 0
    assert results["spilled"].spilled_bytes > 0
    assert "spilled to disk" in results["spilled"].summary
    for f in FEATURES:
        (k1, a1), (k2, a2) = results["memory", f], results["spilled", f]
        assert k1 == k2 and len(k1) == (27 if kind == "tar" else 22)
        assert np.array_equal(a1, a2)


def test_spools_go_with_their_units_and_a_killed_runs_spool_is_swept(tmp_path) -> None:
    """Three units, one worker, every batch spilled: a truncated shard (given up), a good one
    (written), then a ``pipe:`` input that stalls mid-tar. While it stalls only its own spool
    is left: the other two went with their units, not at the end of the run. After a
    kill -9 that spool stays in the output's staging folder until the next process to look
    sweeps it."""
    shards = write_shards(tmp_path / "in", n_shards=3, per_shard=20, seed=6)
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[: len(data) * 2 // 3])      # truncated mid-member
    marker = tmp_path / "reading"
    stall = f"pipe:touch {marker}; head -c {shards[2].stat().st_size // 2} {shards[2]}; sleep 120"
    out = tmp_path / "out"
    args = cli_args([shards[0], shards[1], stall], out, "--num-workers", "1",
                    "--batch-size", "2", "--features", "patches", "--feature-memory", "0")
    p = subprocess.Popen([WEBSSL, *args], env=child_env({}), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    layout = OutputLayout(out)
    try:
        deadline = time.monotonic() + 120
        while not (len(read_done_records(layout)) == 1 and list_unit_failures(layout)
                   and any((out / "_webssl" / "staging").glob("000002.*/*.spool"))):
            assert p.poll() is None, p.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the third unit never spilled"
            time.sleep(0.1)
        left = _staging_left(out)
    finally:
        for pid in {p.pid, *naming(marker)}:      # the run, and the pipe: command's session
            try:
                group = os.getpgid(pid)
                if group != os.getpgrp():
                    os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.communicate()
    assert len(left) == 1 and left[0].startswith("000002."), left
    assert _staging_left(out) == left
    done_units(layout)                     # what any later run or `webssl status` does first
    assert _staging_left(out) == []


def test_the_budget_counts_units_in_flight_not_units_waiting_for_the_writer(tmp_path) -> None:
    """A finished unit queued for writing holds memory the budget does not count (the write
    queue bounds it): spilling for it would spill every batch, each spill waiting behind
    that write. Past the budget, the largest unit in flight spills, and only it."""
    layout = OutputLayout(tmp_path / "out")
    held = HeldFeatures(None, print)
    spiller = Spiller(layout, held, budget=100, waiting=contextlib.nullcontext)
    units = [UnitState(Unit(i, "tar", f"/d/{i}.tar", str(i)), parts_left=1) for i in range(3)]
    for st, rows in zip(units, (70, 10, 30)):     # unit 0: finished, waiting for its write
        st.add_rows(list(range(rows)), ["k"] * rows, ["s"] * rows, [None] * rows,
                    {"cls": np.ones((rows, 1), np.uint8)})
        held.add(st.nbytes)
    inflight = {1: units[1], 2: units[2]}
    spiller.check(inflight)                        # 40 in flight (110 held): under budget
    spiller.queue.drain()
    assert spiller.spilled_bytes == 0 and units[2].spool is None
    more = 65
    units[2].add_rows(list(range(30, 30 + more)), ["k"] * more, ["s"] * more, [None] * more,
                      {"cls": np.ones((more, 1), np.uint8)})
    held.add(more)
    spiller.check(inflight)                        # 105 in flight: unit 2 (95) goes
    spiller.queue.drain()
    assert spiller.spilled_bytes == 95 and units[2].nbytes == 0 and units[1].nbytes == 10
    assert units[2].spool.rows == 95 and units[1].spool is None
    assert held.bytes == 70 + 10
    assert spiller.close(cancel=False) is None
    assert _staging_left(tmp_path / "out") == []


def test_spills_never_wait_behind_a_write_and_a_write_waits_for_its_spills(tmp_path) -> None:
    """Spills have their own thread: while the writer thread is busy with a big unit (a job
    that blocks here), a unit in flight still spills. Its own write first waits for its
    spills (``settle``), so it reads every spilled row."""
    layout = OutputLayout(tmp_path / "out")
    held = HeldFeatures(None, print)
    spiller = Spiller(layout, held, budget=0, waiting=contextlib.nullcontext)
    writes = WriteQueue(2)
    busy = threading.Event()
    writes.submit(busy.wait)                       # a big unit's write, still going
    st = UnitState(Unit(0, "tar", "/d/0.tar", "0"), parts_left=1)
    for start in (0, 5):
        st.add_rows(list(range(start, start + 5)), ["k"] * 5, ["s"] * 5, [None] * 5,
                    {"cls": np.full((5, 2), start, np.float16)})
        held.add(st.nbytes)
        spiller.check({0: st})
    spiller.settle(st)                             # returns while the write still runs
    assert not busy.is_set() and st.spool.rows == 10 and held.bytes == 0
    _, _, _, feats, _ = st.ordered(["cls"], {"cls": (2,)}, np.dtype(np.float16))
    assert feats["cls"][0:10][:, 0].tolist() == [0.0] * 5 + [5.0] * 5
    busy.set()
    assert writes.close(cancel=False) is None and spiller.close(cancel=False) is None
    assert _staging_left(tmp_path / "out") == []


def test_a_write_waiting_for_a_spill_that_a_stop_cancels_fails_at_once(tmp_path) -> None:
    """A second stop signal abandons both queues: a spill still queued is cancelled. The
    unit's write, waiting for it in ``settle``, must fail then, not wait for ever (a
    ``concurrent.futures.wait`` is never woken by that cancel: CPython issue 92001)."""
    spiller = Spiller(OutputLayout(tmp_path / "out"), HeldFeatures(None, print), budget=0,
                      waiting=contextlib.nullcontext)
    busy = threading.Event()
    spiller.queue.submit(busy.wait)                # a spill of another unit, still going
    st = UnitState(Unit(0, "tar", "/d/0.tar", "0"), parts_left=1)
    st.add_rows([0, 1], ["k"] * 2, ["s"] * 2, [None] * 2, {"cls": np.ones((2, 2), np.float16)})
    spiller.check({0: st})                         # queued behind it
    outcome = []

    def write() -> None:
        try:
            spiller.settle(st)
            outcome.append("written")
        except BaseException as exc:               # noqa: BLE001 - what the writer sees
            outcome.append(type(exc).__name__)
    writer = threading.Thread(target=write)
    writer.start()
    spiller.queue.abandon()
    writer.join(10)
    busy.set()
    assert not writer.is_alive() and outcome == ["CancelledError"]


def test_budget_option() -> None:
    assert spill_budget(0, 64 << 30) == 0
    assert spill_budget(100, None) == 100 << 20
    assert spill_budget(None, 8 << 30) == 512 << 20         # a sixteenth
    assert spill_budget(None, 1 << 30) == 256 << 20         # at least 256 MiB
    assert spill_budget(None, 1 << 40) == 4 << 30           # at most 4 GiB
    cfg = config(["x"], "out")
    with pytest.raises(UsageError, match="--feature-memory must be 0"):
        check_config(_spill_cfg(cfg, -1))
