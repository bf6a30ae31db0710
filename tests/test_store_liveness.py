"""Whether the process behind a claim has exited: real processes, this machine's /proc."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from webssl_cli.store.liveness import is_gone, this_process

IDENTITY = "import json; from webssl_cli.store.liveness import this_process; " \
           "print(json.dumps(this_process()), flush=True)"


def test_this_process_is_running():
    me = this_process()
    assert me["pid"] == os.getpid() and me["start"] and me["boot_id"] and me["pid_ns"]
    assert is_gone(me) is False


def test_an_exited_process_is_gone():
    out = subprocess.run([sys.executable, "-c", IDENTITY], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    child = json.loads(out)
    assert child["pid"] != os.getpid() and child["host"] == this_process()["host"]
    assert is_gone(child) is True


def test_a_running_child_is_not_gone_until_it_exits():
    p = subprocess.Popen([sys.executable, "-c", IDENTITY + "; import time; time.sleep(60)"],
                         stdout=subprocess.PIPE, text=True)
    try:
        child = json.loads(p.stdout.readline())
        assert is_gone(child) is False
    finally:
        p.kill()
        p.wait()
    assert is_gone(child) is True


def test_an_exited_child_not_yet_reaped_is_gone():
    p = subprocess.Popen([sys.executable, "-c", IDENTITY], stdout=subprocess.PIPE, text=True)
    try:
        child = json.loads(p.stdout.readline())
        while not open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
            time.sleep(0.01)                    # exited; still in the process table
        assert is_gone(child) is True
    finally:
        p.wait()


def test_a_reused_pid_is_gone():
    """Same PID, another start time: the process that wrote the record has exited and the
    PID now belongs to someone else (here: this test's own process)."""
    me = this_process()
    assert is_gone({**me, "start": str(int(me["start"]) - 1)}) is True


@pytest.mark.parametrize("change", [{"host": "node-b"}, {"boot_id": "another-boot"},
                                    {"pid_ns": "1"}, {"start": None}, {"pid": "12"}])
def test_only_this_machine_and_namespace_is_judged(change):
    """A record from another host, boot or PID namespace (or an incomplete one) is never
    declared gone, even for a PID that does not exist here: the lease decides."""
    unused_pid = 2**22 + 1          # above PID_MAX_LIMIT (2**22): no such process on Linux
    assert is_gone({**this_process(), "pid": unused_pid}) is True
    assert is_gone({**this_process(), "pid": unused_pid, **change}) is False


@pytest.mark.parametrize("record", [None, {}, "host:1:rank0", {"pid": 2**22 + 1}])
def test_records_without_the_identity_are_not_judged(record):
    assert is_gone(record) is False
