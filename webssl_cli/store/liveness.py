"""Has the process that wrote a claim or a commit intent exited?

A claim normally becomes free only when its heartbeat is older than the lease (300 s by
default), because a rank on another node cannot be asked whether it still runs. On the same
machine it can: a rerun right after a crash, a SIGKILL or an OOM kill would otherwise find the
dead run's units claimed and wait out the lease. So claims and intents carry the writer's
identity (:func:`this_process`), and :func:`is_gone` answers True only when it is sure:

* same host name, same boot (``/proc/sys/kernel/random/boot_id``) and same PID namespace
  (containers sharing a host name and boot still differ here), and
* no process with that PID, one that has exited and not been reaped yet (a zombie: a
  ``--gpus`` parent may be waiting on another child), or one that started at another time
  (the PID was reused).

Anything else (another machine or container, no ``/proc``, a record without the identity)
is "not known to be gone": the lease decides, as before.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
from functools import lru_cache
from typing import Any


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22);
    None if there is no such process or it has exited and waits to be reaped (a zombie)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat[stat.rfind(")") + 2:].split()   # the command name may hold spaces or ')'
    if len(fields) <= 19 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _pid_namespace() -> str | None:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return None


@lru_cache(maxsize=1)
def _machine() -> dict[str, str | None]:
    return {"host": socket.gethostname(), "boot_id": _read("/proc/sys/kernel/random/boot_id"),
            "pid_ns": _pid_namespace()}


def process_tag() -> str:
    """This process's identity as a file-name part, ``<pid>-<start>-<machine>``: the start
    time tells a reused PID apart, and an 8-hex hash of host, boot and PID namespace tells
    machines and containers apart. ``x`` for a start time that cannot be read."""
    me = this_process()
    return f"{me['pid']}-{me['start'] or 'x'}-{_machine_hash(_machine())}"


_TAG = re.compile(r"^(\d+)-(\d+)-([0-9a-f]{8})$")


def tag_is_gone(tag: str) -> bool:
    """True only if ``tag`` (from :func:`process_tag`) names a process of this machine, boot
    and PID namespace that is no longer running."""
    m = _TAG.match(tag)
    here = _machine()
    if m is None or here["boot_id"] is None or here["pid_ns"] is None:
        return False
    if m.group(3) != _machine_hash(here):
        return False
    return _start_time(int(m.group(1))) != m.group(2)


def _machine_hash(machine: dict[str, str | None]) -> str:
    text = "|".join(str(machine[k]) for k in ("host", "boot_id", "pid_ns"))
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def this_process() -> dict[str, Any]:
    """The identity written into claims and commit intents."""
    pid = os.getpid()
    return {**_machine(), "pid": pid, "start": _start_time(pid)}


def is_gone(proc: Any) -> bool:
    """True only if ``proc`` (a :func:`this_process` dict) names a process of this machine and
    PID namespace that is no longer running."""
    if not isinstance(proc, dict):
        return False
    here = _machine()
    if here["boot_id"] is None or here["pid_ns"] is None or proc.get("start") is None:
        return False
    if any(proc.get(k) != here[k] for k in ("host", "boot_id", "pid_ns")):
        return False
    pid = proc.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    return _start_time(pid) != proc["start"]
