"""``webssl_cli.extract`` called from Python the way scripts and notebooks call it: real runs
of the fixture model on the CPU, real worker processes and real signals.

* ``--gpus N`` (``RuntimeConfig(gpus=N)``) from a thread other than the main one: it runs
  (no signal handlers there) and leaves no worker process and no temporary file behind;
* the same job with and without ``gpus`` reports the same failed units;
* Ctrl-C in a script: one SIGINT stops the run, cleans up (claims released) and then raises
  KeyboardInterrupt in the caller; a second SIGINT during that cleanup raises at once
  instead of exiting the interpreter, so the script's ``finally`` still runs.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.extract_helpers import config
from tests.helpers.images import write_shards
from tests.helpers.procs import naming, stalling_pipe, wait_blocked_reading
from webssl_cli import extract

ROOT = Path(__file__).resolve().parents[1]
WORKER_MODULE = "webssl_cli.distributed.worker"


def with_gpus(cfg, n: int):
    return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, gpus=n))


def worker_children() -> list[int]:
    """Live child processes of this one that run the ``--gpus`` worker module."""
    me = str(os.getpid())
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[1] == me and fields[0] != "Z" and WORKER_MODULE.encode() in cmd:
            found.append(int(name))
    return found


def test_gpus_from_a_thread_runs_and_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    """Before the fix: ValueError (signal only works in main thread) raised after the workers
    had started; they went on unsupervised and the config file was left in the temp dir."""
    shards = write_shards(tmp_path / "sh", 2, 3, with_json=False)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))   # where the launcher's file goes
    cfg = with_gpus(config(shards, tmp_path / "out", workers=0), 2)
    got: dict = {}

    def call() -> None:
        try:
            got["result"] = extract(cfg)
        except BaseException as exc:     # noqa: BLE001 - reported by the asserts below
            got["error"] = exc

    t = threading.Thread(target=call)
    t.start()
    t.join(300)
    left = worker_children()
    try:
        assert not t.is_alive(), "extract(gpus=2) from a thread did not return"
        assert "error" not in got, repr(got.get("error"))
        assert got["result"].exit_code == 0 and got["result"].units_done_here == 2
        assert left == [], "worker processes outlived extract()"
        assert list(temp.iterdir()) == [], "the launcher's temporary config file was left"
    finally:
        for pid in left:
            os.kill(pid, signal.SIGKILL)


def test_failed_units_are_the_same_with_and_without_gpus(tmp_path) -> None:
    """One good tar and one cut short: both ways the job exits 3 naming the broken unit
    (before the fix the ``gpus`` path always reported ``units_failed == []``)."""
    good, broken = write_shards(tmp_path / "sh", 2, 4, with_json=False)
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2 + 7])
    results = {}
    for gpus in (0, 2):
        cfg = with_gpus(config([tmp_path / "sh"], tmp_path / f"out{gpus}", workers=0), gpus)
        results[gpus] = extract(cfg)
    single, launched = results[0], results[2]
    assert single.exit_code == launched.exit_code == 3
    assert single.units_failed == launched.units_failed == ["000001"]


# -- Ctrl-C in a script -------------------------------------------------------------------

SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from tests.extract_helpers import config
import webssl_cli
try:
    try:
        r = webssl_cli.extract(config([sys.argv[1]], sys.argv[2], workers=1, batch=4))
        print("RETURNED", r.exit_code, flush=True)
    except KeyboardInterrupt as exc:
        print("KEYBOARDINTERRUPT", exc, flush=True)
finally:
    from webssl_cli.store import list_claims
    from webssl_cli.store import OutputLayout
    print("CLAIMS HELD", len(list_claims(OutputLayout(sys.argv[2]))), flush=True)
    print("FINALLY", flush=True)
"""


@pytest.fixture
def stalled_script(tmp_path):
    """A Python script calling ``webssl_cli.extract`` on a pipe: input that stalls mid-tar;
    yields (process, out dir, the pipe: command's marker) once its DataLoader worker is blocked reading it."""
    shard = write_shards(tmp_path / "sh", 1, 24, with_json=False)[0]
    marker = tmp_path / "reading"
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(root=str(ROOT)))
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, str(script), stalling_pipe(shard, marker, 120),
                          str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        wait_blocked_reading(p, marker)
        yield p, out, marker
    finally:
        for pid in naming(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.communicate()


def outcome(p: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the script did not end within 60 s of the signal")
    return p.returncode, out, err


def test_one_sigint_raises_keyboard_interrupt_after_cleanup(stalled_script) -> None:
    """Before the fix extract returned exit code 4 and a script's loop went on."""
    p, out, _ = stalled_script
    p.send_signal(signal.SIGINT)
    code, stdout, err = outcome(p)
    assert "KEYBOARDINTERRUPT stopped by SIGINT" in stdout, stdout + err[-2000:]
    assert "RETURNED" not in stdout and "FINALLY" in stdout
    assert code == 0, err[-2000:]
    assert not list((out / "_webssl" / "claims").glob("*.json")), "claims left behind"


def test_second_sigint_raises_instead_of_exiting_the_interpreter(stalled_script) -> None:
    """Before the fix the second SIGINT os._exit(4)ed the caller's process: no finally."""
    p, out, marker = stalled_script
    p.send_signal(signal.SIGINT)
    time.sleep(0.3)                 # inside the cleanup, which waits for the stalled worker
    p.send_signal(signal.SIGINT)
    code, stdout, err = outcome(p)
    assert "FINALLY" in stdout, stdout + err[-2000:]
    # released though the cleanup was cut short: the caller's rerun need not wait a lease
    assert "CLAIMS HELD 0" in stdout, stdout
    assert "KEYBOARDINTERRUPT" in stdout and "RETURNED" not in stdout, stdout
    assert "second SIGINT: stopping now" in err, err[-2000:]
    assert "exiting now" not in err
    assert code == 0, err[-2000:]
    deadline = time.monotonic() + 10
    while naming(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert naming(marker) == [], "the pipe: command outlived the interrupted run"
