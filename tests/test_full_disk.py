"""The output file system fails under a run: full (ENOSPC) or remounted read-only mid-run.
The run stops with one line naming the file and what to do (exit 1), leaves no temp file
behind, and the same command resumes to every key exactly once once the file system is
fine again. Real tmpfs mounts: root only (skipped elsewhere)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.extract_helpers import cli_args
from tests.helpers import images as gen
from tests.helpers.cli import WEBSSL, child_env
from webssl_cli import read_features


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    where.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    for i in range(40):
        (d / f"s{i // 10}").mkdir(parents=True, exist_ok=True)
        (d / f"s{i // 10}" / f"{i:03d}.jpg").write_bytes(gen.make_jpeg(20, 16, seed=i))
    return d


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([WEBSSL, *args], capture_output=True, text=True, env=child_env({}),
                          timeout=300)


def temp_files(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*.tmp")]


def test_a_full_disk_stops_with_what_to_do_and_the_rerun_completes(tmp_path, photos):
    with tmpfs(tmp_path / "m", "12k") as m:
        out = m / "o"
        args = cli_args([photos], out, "--num-workers", "0", "--shard-size", "5",
                        "--features", "cls,patches")
        r = run(args)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert ("No space left on device; free space on that filesystem" in r.stderr or
                "MiB free on that file system). Check free space" in r.stderr), r.stderr[-2000:]
        assert f"error: {out}" in r.stderr or f"under {out}" in r.stderr, r.stderr[-2000:]
        assert temp_files(out) == []
        remount(m, "size=20m")
        r = run(args)
        assert r.returncode == 0, r.stderr[-3000:]
        keys, _ = read_features(out)
        assert sorted(keys) == sorted(f"s{i // 10}/{i:03d}.jpg" for i in range(40))


def test_output_remounted_read_only_mid_run_then_resumed(tmp_path, photos):
    with tmpfs(tmp_path / "m", "20m") as m:
        out = m / "o"
        args = cli_args([photos], out, "--num-workers", "0", "--shard-size", "1",
                        "--features", "cls,patches")
        p = subprocess.Popen([WEBSSL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=child_env({}))
        deadline = time.monotonic() + 120
        done = out / "_webssl" / "done"
        while not (done.is_dir() and len(os.listdir(done)) >= 3):
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1][-3000:]
            time.sleep(0.02)
        while p.poll() is None:      # refused while a file is open for writing: retry
            if subprocess.run(["mount", "-o", "remount,ro", str(m)],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.005)
        _, err = p.communicate(timeout=120)
        if p.returncode == 0:
            pytest.skip("the run finished before the file system went read-only")
        assert p.returncode == 1 and "Traceback" not in err, err[-3000:]
        assert "Read-only file system" in err and ".tmp" not in err, err[-3000:]
        assert "make it writable" in err or "permissions of --out" in err, err[-3000:]
        assert err.count("could not release") <= 1, err[-3000:]
        remount(m, "rw")
        r = run(args)
        assert r.returncode == 0, r.stderr[-3000:]
        keys, _ = read_features(out)
        assert sorted(keys) == sorted(f"s{i // 10}/{i:03d}.jpg" for i in range(40))
        assert temp_files(out) == []


def test_a_full_disk_while_spilling_says_so_and_leaves_no_spool(tmp_path, photos):
    """Every batch spilled (--feature-memory 0) on an output too small for the unit's spool:
    the run stops naming the spill and what to do, removes the spool, and resumes."""
    with tmpfs(tmp_path / "m", "100k") as m:
        out = m / "o"
        args = cli_args([photos], out, "--num-workers", "0", "--shard-size", "40",
                        "--features", "patches", "--feature-memory", "0", "--batch-size", "4")
        r = run(args)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert "spilling the features of unit 000000" in r.stderr, r.stderr[-2000:]
        assert "raise --feature-memory" in r.stderr, r.stderr[-2000:]
        assert os.listdir(out / "_webssl" / "staging") == []
        remount(m, "size=20m")
        r = run(args)
        assert r.returncode == 0, r.stderr[-3000:]
        assert len(read_features(out, "patches")[0]) == 40
