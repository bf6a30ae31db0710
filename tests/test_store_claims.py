"""Dynamic unit claims across real OS processes: exclusive claims, stale takeover, SIGKILL."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from webssl_cli.store import (ClaimLostError, ClaimStore, DoneRecord, OutputLayout, UnitRows,
                              commit_unit, done_units, get_status, list_claims, save_or_load_plan,
                              write_unit)
from tests.helpers.race import race_two
from webssl_cli.units import Unit


def _units(n: int) -> list[Unit]:
    return [Unit(index=i, kind="tar", source=f"/d/s{i}.tar", name=f"s{i:06d}") for i in range(n)]


def _plan(out, n):
    layout = OutputLayout(out)
    return layout, save_or_load_plan(layout, lambda: _units(n), is_planner=True, wait_seconds=1)


def _make_stale(layout: OutputLayout, unit_id: str, seconds: float = 1000) -> None:
    for p in layout.claims_dir.glob(f"{unit_id}.*.json"):
        past = time.time() - seconds
        os.utime(p, (past, past))


def _worker(out: str, owner: str, barrier, results) -> None:
    layout = OutputLayout(out)
    units = save_or_load_plan(layout, lambda: [], is_planner=False, wait_seconds=30)
    store = ClaimStore(layout, owner, lease_seconds=60)
    barrier.wait()
    claimed, won = [], []
    while (unit := store.claim_next(units, set(done_units(layout)))) is not None:
        claimed.append(unit.id)
        store.heartbeat(unit.id)
        rows = UnitRows(keys=[f"{unit.name}/{owner}"], sources=[unit.source],
                        features={"cls": np.full((1, 4), len(claimed), np.float16)})
        files = write_unit(layout, "parquet", unit, rows, {"owner": owner})
        if commit_unit(layout, DoneRecord(unit.id, unit.name, unit.source, 1, 0, files, None,
                                          owner, 0.0)):
            won.append(unit.id)
        store.release(unit.id)
    results.put((owner, claimed, won))


def test_four_processes_claim_each_of_20_units_exactly_once(tmp_path):
    out = str(tmp_path / "out")
    layout, units = _plan(out, 20)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(out, f"host:{i}:rank{i}", barrier, results))
             for i in range(4)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    claimed = [uid for _, c, _ in got for uid in c]
    won = [uid for _, _, w in got for uid in w]
    assert sorted(claimed) == [u.id for u in units]          # every unit, exactly once
    assert sorted(won) == sorted(claimed)
    done = done_units(layout)
    assert sorted(done) == [u.id for u in units]
    for owner, c, _ in got:
        assert all(done[uid].rank == owner for uid in c)
    assert list_claims(layout) == []                          # all released
    assert not any(layout.staging_dir.iterdir())


def _stale_racer(out: str, owner: str, rounds: int, barrier, results) -> None:
    layout = OutputLayout(out)
    units = save_or_load_plan(layout, lambda: [], is_planner=False, wait_seconds=30)
    store = ClaimStore(layout, owner, lease_seconds=60)
    for r in range(rounds):
        barrier.wait()
        unit = store.claim_next([units[r]], set())
        results.put((r, owner, unit.id if unit else None))


def test_stale_claim_is_taken_over_by_exactly_one_of_two_racers(tmp_path):
    rounds = 6
    out = str(tmp_path / "out")
    layout, units = _plan(out, rounds)
    dead = ClaimStore(layout, "deadhost:1:rank0", lease_seconds=60)
    for _ in range(rounds):
        assert dead.claim_next(units, set()) is not None
    for u in units:
        _make_stale(layout, u.id)
    got = race_two(_stale_racer, lambda i: (out, f"h:{i}:r{i}", rounds), 2 * rounds)
    claims = {c.unit_id: c for c in list_claims(layout)}
    for r in range(rounds):
        winners = [owner for rr, owner, uid in got if rr == r and uid is not None]
        assert len(winners) == 1, (r, got)
        c = claims[units[r].id]
        assert c.owner == winners[0] and c.generation == 1 and c.age_seconds < 60
        assert c.owner_gone          # the racer processes have exited since: stale at once
        assert [p.name for p in layout.claims_dir.glob(f"{units[r].id}.*.json")] == [
            f"{units[r].id}.000001.json"]                     # the dead owner's claim is gone


def test_fresh_claim_is_never_taken_and_heartbeat_detects_takeover(tmp_path):
    layout, units = _plan(tmp_path / "out", 2)
    a = ClaimStore(layout, "a", lease_seconds=60)
    b = ClaimStore(layout, "b", lease_seconds=60)
    assert a.claim_next(units[:1], set()).id == "000000"
    assert b.claim_next(units[:1], set()) is None             # live claim
    a.heartbeat("000000")
    _make_stale(layout, "000000")
    assert b.claim_next(units[:1], set()).id == "000000"      # stale: taken over
    with pytest.raises(ClaimLostError, match="taken over by b"):
        a.heartbeat("000000")
    assert a.held == [] and b.held == ["000000"]
    assert b.claim_next(units, {"000001"}) is None            # done units are never claimed


def test_a_shorter_lease_does_not_take_over_a_claim_inside_its_owners_lease(tmp_path):
    """A rank run with --lease 5 next to one on the default 300 s (heartbeat every 30 s):
    the claim is stale only after its owner's own lease, else the short-lease rank took
    units the other was still working on, and their work was done twice."""
    layout, units = _plan(tmp_path / "out", 1)
    a = ClaimStore(layout, "a", lease_seconds=300)
    short = ClaimStore(layout, "short", lease_seconds=5)
    assert a.claim_next(units, set()).id == "000000"
    _make_stale(layout, "000000", seconds=60)       # a's last heartbeat 60 s ago
    assert short.claim_next(units, set()) is None   # inside a's 300 s lease: still a's
    _make_stale(layout, "000000", seconds=1000)
    assert short.claim_next(units, set()).id == "000000"


def test_heartbeat_after_release_does_not_resurrect_the_claim(tmp_path):
    layout, units = _plan(tmp_path / "out", 1)
    a = ClaimStore(layout, "a", lease_seconds=60)
    assert a.claim_next(units, set()) is not None
    a.release("000000")
    a.heartbeat("000000")                  # a heartbeat thread may still list the unit
    assert list_claims(layout) == [] and a.held == []
    with pytest.raises(ClaimLostError, match="not claimed"):
        a.heartbeat("000009")


def test_claim_next_skips_committed_units_even_if_not_in_done_set(tmp_path):
    layout, units = _plan(tmp_path / "out", 2)
    u = units[0]
    rows = UnitRows(keys=["k"], sources=["s"], features={"cls": np.zeros((1, 2), np.float16)})
    files = write_unit(layout, "parquet", u, rows, {})
    assert commit_unit(layout, DoneRecord(u.id, u.name, u.source, 1, 0, files, None, "x", 0.0))
    store = ClaimStore(layout, "late", lease_seconds=60)
    assert store.claim_next(units, set()).id == "000001"


_HOLDER = """
import sys, time
from webssl_cli.store import ClaimStore, OutputLayout, load_plan
layout = OutputLayout(sys.argv[1])
store = ClaimStore(layout, "nodeA:%d:rank7" % __import__("os").getpid(), lease_seconds=30)
unit = store.claim_next(load_plan(layout), set())
store.heartbeat(unit.id)
print(unit.id, flush=True)
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 120)
"""


def start_holder(layout: OutputLayout, seconds: float = 120):
    """A real process that claims the first free unit, prints its id, then sleeps."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(layout.out_dir), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def _sigkill(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkilled_rank_on_this_machine_is_taken_over_at_once(tmp_path):
    layout, units = _plan(tmp_path / "out", 3)
    proc, uid = start_holder(layout)
    try:
        assert uid == "000000"
        claim = get_status(layout.out_dir).claims[0]
        assert (claim.owner, claim.stale, claim.owner_gone) == (f"nodeA:{proc.pid}:rank7",
                                                                False, False)
        other = ClaimStore(layout, "nodeB:1:rank0", lease_seconds=300)
        assert other.claim_next(units, set()).id == "000001"  # alive, within the lease: skipped
    finally:
        _sigkill(proc)
    claim = get_status(layout.out_dir).claims[0]
    assert claim.unit_id == "000000" and claim.stale and claim.owner_gone
    assert claim.age_seconds < 300                            # stale long before the lease
    assert other.claim_next(units, set()).id == "000000"      # its process is gone: taken over
    data = json.loads((layout.claims_dir / "000000.000001.json").read_text())
    assert data["owner"] == "nodeB:1:rank0" and data["process"]["pid"] == os.getpid()


def test_sigkilled_rank_on_another_machine_is_taken_over_after_the_lease(tmp_path):
    """What a claim written on another node looks like here: its process identity names
    another host and boot, so only the lease can free it."""
    layout, units = _plan(tmp_path / "out", 3)
    proc, uid = start_holder(layout)
    path = layout.claims_dir / f"{uid}.000000.json"
    data = json.loads(path.read_text())
    data["process"].update(host="nodeA", boot_id="another-boot")
    path.write_text(json.dumps(data))
    _sigkill(proc)
    report = get_status(layout.out_dir)
    assert [(c.unit_id, c.owner, c.stale, c.owner_gone) for c in report.claims] == [
        ("000000", f"nodeA:{proc.pid}:rank7", False, False)]
    other = ClaimStore(layout, "nodeB:1:rank0", lease_seconds=30)
    assert other.claim_next(units, set()).id == "000001"      # within the lease: skipped
    _make_stale(layout, uid, seconds=31)
    report = get_status(layout.out_dir)
    assert report.claims[0].stale and report.claims[0].age_seconds >= 31
    assert other.claim_next(units, set()).id == "000000"      # after the lease: taken over
    owners = {c.unit_id: c.owner for c in get_status(layout.out_dir).claims}
    assert owners == {"000000": "nodeB:1:rank0", "000001": "nodeB:1:rank0"}
    data = json.loads((layout.claims_dir / "000000.000001.json").read_text())
    assert data["owner"] == "nodeB:1:rank0" and data["generation"] == 1
