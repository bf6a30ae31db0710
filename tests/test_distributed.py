"""Several ranks as real OS processes (SLURM variables, torchrun, --gpus on CPU), dynamic
claiming, SIGKILL / SIGTERM, and resume: every input exactly once, equal to one process."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.extract_helpers import cli_args, config
from tests.helpers import images as img
from tests.helpers.cli import WEBSSL, cli_here, run_cli
from webssl_cli import extract, read_features
from webssl_cli.errors import EXIT_PREEMPTED
from webssl_cli.store import OutputLayout, done_units, list_claims

N_SHARDS, PER_SHARD = 8, 12


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("dshards")
    img.write_shards(d, n_shards=N_SHARDS, per_shard=PER_SHARD, seed=7, with_json=False)
    return d


@pytest.fixture(scope="module")
def single(shards: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    assert extract(config([shards], out, workers=1)).exit_code == 0
    return read_features(out, "cls")


def visible_data_files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*")
            if p.is_file() and not p.relative_to(out).as_posix().startswith("_webssl/")}


def committed_files(out: Path) -> set[str]:
    return {f.path for rec in done_units(OutputLayout(out)).values() for f in rec.files}


def assert_complete_and_equal(out: Path, single) -> None:
    keys, cls = read_features(out, "cls")
    assert len(keys) == len(set(keys)) == N_SHARDS * PER_SHARD
    assert keys == single[0]
    assert np.array_equal(cls, single[1])                     # byte for byte
    assert visible_data_files(out) == committed_files(out)    # nothing partial or stray


def start_rank(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([WEBSSL, *args], env=dict(os.environ, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def units_by_rank(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rec in done_units(OutputLayout(out)).values():
        counts[rec.rank.split(":")[-1]] = counts.get(rec.rank.split(":")[-1], 0) + 1
    return counts


@pytest.mark.parametrize("world", [2, 3])
def test_slurm_ranks_cover_everything_once(world: int, shards: Path, single, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = cli_args([shards], out, "--num-workers", "1", "--batch-size", "4")
    procs = [start_rank(args, {"SLURM_PROCID": str(r), "SLURM_NTASKS": str(world),
                               "SLURM_LOCALID": str(r)}) for r in range(world)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    assert_complete_and_equal(out, single)
    assert set(units_by_rank(out)) <= {f"rank{r}" for r in range(world)}


def test_a_broken_shard_is_tried_by_one_rank_and_reported(shards: Path, single,
                                                           tmp_path: Path) -> None:
    """A truncated shard fails on one rank only (the other rank of the same SLURM job skips
    it instead of retrying it at the tail, even if it started later), that rank exits 3,
    `webssl status` says which unit and why; after a repair, a rerun (another job) retries
    it and the output is complete."""
    d = tmp_path / "sh"
    shutil.copytree(shards, d)
    victim = d / "shard-000002.tar"
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2 + 7])
    out = tmp_path / "out"
    args = cli_args([d], out, "--num-workers", "0", "--batch-size", "4")
    procs = [start_rank(args, {"SLURM_PROCID": str(r), "SLURM_NTASKS": "2",
                               "SLURM_LOCALID": str(r), "SLURM_JOB_ID": "4242",
                               "SLURM_STEP_ID": "0"}) for r in range(2)]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 3], errs
    failing = codes.index(3)
    assert "shard-000002" in errs[failing] and "could not be completed" in errs[failing]
    assert "could not be completed" not in errs[1 - failing]
    assert "1 unit failed on other ranks" in errs[1 - failing]
    status = cli_here(["status", str(out), "--json"])
    report = json.loads(status.stdout)
    assert report["units_done"] == N_SHARDS - 1 and not report["complete"]
    [failed] = report["failed_units"]
    assert failed["unit_name"] == "shard-000002" and failed["owner"].endswith(f"rank{failing}")
    assert "Error" in failed["reason"]
    table = cli_here(["status", str(out)]).stdout
    assert "units given up" in table and "…" not in table    # long cells wrap, not cut
    victim.write_bytes(good)
    r = cli_here(args)
    assert r.returncode == 0, r.stderr
    assert json.loads(cli_here(["status", str(out), "--json"]).stdout)["failed_units"] == []
    keys, _ = read_features(out, "cls")
    assert keys == single[0]


def test_torchrun_standalone(shards: Path, single, tmp_path: Path) -> None:
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    out = tmp_path / "out"
    args = cli_args([shards], out, "--num-workers", "1")
    r = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "webssl_cli",
                        *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_complete_and_equal(out, single)


def test_gpus_flag_on_cpu_workers(shards: Path, single, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli(cli_args([shards], out, "--gpus", "2", "--num-workers", "1"), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_complete_and_equal(out, single)
    assert len(units_by_rank(out)) >= 1


def test_stalled_rank_others_take_more_units(shards: Path, single, tmp_path: Path) -> None:
    """Rank 1 is stopped (SIGSTOP) right after its first claim: rank 0 does all the rest,
    then waits for rank 1's units instead of exiting 0 on an incomplete output; once rank 1
    runs again, both finish."""
    out = tmp_path / "out"
    layout = OutputLayout(out)
    args = cli_args([shards], out, "--num-workers", "0", "--batch-size", "2")
    plan = cli_here(args + ["--limit-units", "0"])         # plan + run config, no unit
    assert plan.returncode == 0, plan.stderr
    slow = start_rank(args, {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    try:
        deadline = time.time() + 120
        while not any(c.owner.endswith("rank1") for c in list_claims(layout)):
            assert time.time() < deadline and slow.poll() is None, "rank 1 never claimed"
            time.sleep(0.01)
        os.kill(slow.pid, signal.SIGSTOP)
        held = sum(c.owner.endswith("rank1") for c in list_claims(layout))   # 1 or 2
        fast = start_rank(args, {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
        wait_for_done(out, N_SHARDS - held, fast, timeout=240)
        time.sleep(2)
        assert fast.poll() is None, "rank 0 exited while rank 1's units were open"
    finally:
        os.kill(slow.pid, signal.SIGCONT)
    _, err = fast.communicate(timeout=240)
    assert fast.returncode == 0, err
    assert "waiting for the ranks that hold them" in err and f"rank1: {held} unit" in err
    _, err = slow.communicate(timeout=240)
    assert slow.returncode == 0, err
    counts = units_by_rank(out)
    assert counts == {"rank0": N_SHARDS - held, "rank1": held}, counts
    assert_complete_and_equal(out, single)


def test_unit_of_a_rank_that_exits_is_taken_over_by_the_waiting_rank(
        shards: Path, single, tmp_path: Path) -> None:
    """Another process claims a unit and exits without finishing it (a crash): the rank that
    did everything else waits, sees the process gone and does that unit too. With a one-hour
    lease, only the process check can free the unit before the test's timeout; exit 0 means
    complete."""
    out = tmp_path / "out"
    args = cli_args([shards], out, "--num-workers", "0", "--batch-size", "2", "--lease", "3600")
    assert cli_here(args + ["--limit-units", "0"]).returncode == 0
    holder = subprocess.Popen([sys.executable, "-c", CLAIM_AND_EXIT_LATER, str(out)],
                              stdout=subprocess.PIPE, text=True)
    held = holder.stdout.readline().strip()
    r = cli_here(args)
    assert holder.wait(timeout=60) == 0
    assert r.returncode == 0, r.stderr
    assert "waiting for the ranks that hold them" in r.stderr and "crashed:" in r.stderr
    assert done_units(OutputLayout(out))[held].rank.endswith("rank0")   # done here
    assert_complete_and_equal(out, single)


CLAIM_AND_EXIT_LATER = """
import os, sys, time
from webssl_cli.store import ClaimStore, OutputLayout, load_plan
layout = OutputLayout(sys.argv[1])
units = load_plan(layout)
store = ClaimStore(layout, "crashed:%d:rank5" % os.getpid(), lease_seconds=300)
print(store.claim_next(units[3:], set()).id, flush=True)
while len(list(layout.done_dir.glob("*.json"))) < len(units) - 1:   # the others are done
    time.sleep(0.05)
time.sleep(1.0)
os._exit(0)       # no release: the claim stays behind, fresh, as after a crash
"""


def wait_for_done(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    layout = OutputLayout(out)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if layout.done_dir.exists() and len(list(layout.done_dir.glob("*.json"))) >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"no {n} done units before the process ended: {proc.poll()}")


def test_sigkill_mid_run_then_resume(shards: Path, single, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = cli_args([shards], out, "--num-workers", "1", "--batch-size", "2")
    p = start_rank(args, {})
    wait_for_done(out, 2, p)
    p.kill()
    p.wait()
    done_before = len(done_units(OutputLayout(out)))
    assert done_before < N_SHARDS, "the run finished before the kill; make the inputs larger"
    assert visible_data_files(out) <= committed_files(out)    # no partial file visible
    # at once, without waiting out the 300 s lease: the killed process is gone
    r = cli_here(cli_args([shards], out, "--num-workers", "1"))
    assert r.returncode == 0, r.stderr
    assert "waiting for the ranks" not in r.stderr
    assert_complete_and_equal(out, single)


def test_sigterm_exits_with_code_and_releases_claim(shards: Path, single, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = cli_args([shards], out, "--num-workers", "1", "--batch-size", "2")
    p = start_rank(args, {})
    wait_for_done(out, 1, p)
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert time.time() - t0 < 15
    assert p.returncode == EXIT_PREEMPTED, err
    assert "SIGTERM" in err
    layout = OutputLayout(out)
    assert [c for c in list_claims(layout) if not c.stale] == []   # released, not left to the lease
    assert visible_data_files(out) <= committed_files(out)
    r = cli_here(cli_args([shards], out, "--num-workers", "1"))
    assert r.returncode == 0, r.stderr
    assert_complete_and_equal(out, single)
    status = cli_here(["status", str(out), "--json"])
    assert status.returncode == 0
    assert json.loads(status.stdout)["units_done"] == N_SHARDS


def test_gpus_parent_ctrl_c_stops_all_workers(shards: Path, single, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = cli_args([shards], out, "--gpus", "2", "--num-workers", "0", "--batch-size", "2")
    p = start_rank(args, {})
    wait_for_done(out, 1, p, timeout=180)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == EXIT_PREEMPTED, err[-2000:]
    # both workers got it and stopped: in their run, or (a slow start under load) before it
    assert err.count("SIGINT received") + err.count("stopped by SIGINT before") == 2, err
    layout = OutputLayout(out)
    assert [c for c in list_claims(layout) if not c.stale] == []
    assert visible_data_files(out) <= committed_files(out)
    r = cli_here(cli_args([shards], out, "--num-workers", "1"))
    assert r.returncode == 0, r.stderr
    assert_complete_and_equal(out, single)


def test_gpus_terminal_ctrl_c_stops_workers_cleanly(shards: Path, single, tmp_path: Path) -> None:
    """A terminal sends Ctrl-C to its whole foreground process group: the workers run in a
    group of their own, so each gets it once (forwarded by the launcher) and stops cleanly;
    before, they got it twice and exited at once ("second SIGINT: exiting now")."""
    out = tmp_path / "out"
    args = cli_args([shards], out, "--gpus", "2", "--num-workers", "0", "--batch-size", "2")
    p = subprocess.Popen([WEBSSL, *args], env=dict(os.environ), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_done(out, 1, p, timeout=180)
    os.killpg(p.pid, signal.SIGINT)                 # what the terminal does
    _, err = p.communicate(timeout=60)
    assert p.returncode == EXIT_PREEMPTED, err[-2000:]
    assert "exiting now" not in err, err[-2000:]
    assert [c for c in list_claims(OutputLayout(out)) if not c.stale] == []


def worker_pids(parent: int) -> list[int]:
    """The --gpus launcher's worker processes (children running the worker module)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"distributed.worker" in cmd:
            pids.append(int(d.name))
    return sorted(pids)


def test_gpus_worker_killed_the_other_finishes_and_exit_is_0(shards: Path, single,
                                                              tmp_path: Path) -> None:
    """A --gpus worker SIGKILLed mid-run (the out-of-memory killer, say): the other worker
    takes its units over at once (same machine), the output is complete, so the launcher
    exits 0, names the dead worker and counts the job's images."""
    out = tmp_path / "out"
    args = cli_args([shards], out, "--gpus", "2", "--num-workers", "0", "--batch-size", "2")
    p = start_rank(args, {})
    wait_for_done(out, 1, p, timeout=180)
    victims = worker_pids(p.pid)
    assert len(victims) == 2
    if "OMP_NUM_THREADS" not in os.environ:    # CPU workers split the cores between them
        share = max(1, (os.cpu_count() or 1) // 2)
        environ = Path(f"/proc/{victims[0]}/environ").read_bytes().split(b"\0")
        assert f"OMP_NUM_THREADS={share}".encode() in environ
    os.kill(victims[1], signal.SIGKILL)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert "killed by SIGKILL" in err, err[-2000:]
    assert f"--gpus 2: {N_SHARDS * PER_SHARD} images" in err, err[-2000:]
    assert_complete_and_equal(out, single)


def test_second_signal_exits_at_once(shards: Path, single, tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = start_rank(cli_args([shards], out, "--num-workers", "1", "--batch-size", "2"), {})
    wait_for_done(out, 1, p)
    p.send_signal(signal.SIGTERM)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == EXIT_PREEMPTED, err
    assert visible_data_files(out) <= committed_files(out)
    r = cli_here(cli_args([shards], out, "--num-workers", "1"))
    assert r.returncode == 0, r.stderr
    assert_complete_and_equal(out, single)
