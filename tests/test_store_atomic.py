"""Crash-safe writes of the output store: temp + fsync + rename, exclusive create, SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from webssl_cli.store import atomic_output, atomic_write_bytes, exclusive_create


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second version")
    assert target.read_bytes() == b"second version"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_atomic_output_error_removes_temp_and_keeps_old_file(tmp_path):
    target = tmp_path / "x.npy"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]


def test_exclusive_create_only_first_wins(tmp_path):
    target = tmp_path / "claim.json"
    assert exclusive_create(target, b"one") is True
    assert exclusive_create(target, b"two") is False
    assert target.read_bytes() == b"one"
    assert [p.name for p in tmp_path.iterdir()] == ["claim.json"]


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from webssl_cli.store import atomic_output
    with atomic_output(sys.argv[1]) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"x" * 1_000_000)
        print("written", flush=True)
        time.sleep(120)      # killed here: temp written, not renamed
""")


def test_sigkill_between_write_and_rename_leaves_no_visible_file(tmp_path):
    target = tmp_path / "cls" / "000000.npy"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
        leftovers = list(target.parent.iterdir())
        assert len(leftovers) == 1 and leftovers[0].stat().st_size == 1_000_000
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    # what is left is hidden and does not match the readers' globs
    names = [p.name for p in target.parent.iterdir()]
    assert all(n.startswith(".") and n.endswith(".tmp") for n in names)
    assert not list(target.parent.glob("*.npy"))


def test_a_failed_write_names_the_file_and_leaves_no_temp(tmp_path):
    """A write error that carries no file name (a full disk's ENOSPC; here EFBIG from a
    file-size limit, in a child process) names the file being written, not its temp name or
    nothing, and no temp file is left behind, for both ways of writing."""
    script = textwrap.dedent(f"""
        import os, resource, signal
        from pathlib import Path
        from webssl_cli.store import atomic_write_bytes, exclusive_create
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.RLIM_INFINITY))
        for fn, name in ((exclusive_create, "claim.json"), (atomic_write_bytes, "plan.json")):
            try:
                fn(Path({str(tmp_path)!r}) / name, b"x" * 1000)
            except OSError as exc:
                print(exc.errno, exc.filename)
        print(sorted(os.listdir({str(tmp_path)!r})))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    import errno
    assert lines[:2] == [f"{errno.EFBIG} {tmp_path / 'claim.json'}",
                         f"{errno.EFBIG} {tmp_path / 'plan.json'}"]
    assert lines[2] == "[]"                                  # no temp file, no partial file
