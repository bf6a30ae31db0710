"""The end of a rank's share: units it cannot claim because other ranks hold them.

A rank that finds nothing left to claim is not done while other ranks' claims are open: if
one of those ranks died (a crash, SIGKILL, a lost node), its units would be missing from an
output whose every rank exited 0. So the rank waits, polling, until every unit is done, is
one it failed itself, or can be taken over (the holder's heartbeat is older than the lease,
or its process is known to have exited: store/liveness.py), and then claims it. Exit 0 thus
means the output is complete. The wait is interruptible like any other (SIGTERM/SIGINT:
exit 4, a rerun resumes).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from ..store.records import ClaimInfo
from ..store.unit_failures import UnitFailure
from ..units import Unit

FIRST_POLL, MAX_POLL = 0.25, 5.0   # seconds between looks at the claims, growing 1.5x
SAY_EVERY = 60.0                   # seconds between reports while the count changes


def open_units(units: list[Unit], done: set[str], skip: set[str]) -> list[Unit]:
    """Units neither done nor in ``skip`` (failed, lost or still held by this rank)."""
    return [u for u in units if u.id not in done and u.id not in skip]


def units(n: int) -> str:
    return f"{n} unit{'s' * (n != 1)}"


def waiting_message(left: list[Unit], claims: list[ClaimInfo], lease: float) -> str:
    ids = {u.id for u in left}
    held = [c for c in claims if c.unit_id in ids]
    owners = Counter(c.owner for c in held)
    latest = {o: min(c.age_seconds for c in held if c.owner == o) for o in owners}
    who = "; ".join(f"{o}: {units(n)}, heartbeat {latest[o]:.0f} s ago"
                    for o, n in owners.most_common(4))
    more = f"; and {len(owners) - 4} more ranks" if len(owners) > 4 else ""
    unclaimed = len(left) - len(held)
    extra = f"; {unclaimed} being committed" if unclaimed > 0 else ""
    return (f"nothing left to claim, but {units(len(left))} not done: waiting for the ranks "
            f"that hold them ({who or 'none'}{more}{extra}). A unit is taken over here if its "
            f"rank's process is gone or silent for the {lease:g} s lease (--lease); Ctrl-C "
            "stops waiting and a rerun resumes")


@dataclass
class OthersWait:
    """Polling state of the wait: the interval grows from FIRST_POLL to MAX_POLL."""
    poll: float = FIRST_POLL
    seconds: float = 0.0          # time spent waiting (kept out of the throughput figures)
    said: int | None = None       # open units when last reported
    said_at: float = 0.0

    def next_poll(self) -> float:
        p = self.poll
        self.poll = min(self.poll * 1.5, MAX_POLL)
        return p

    def should_say(self, left: int) -> bool:
        """Report the first wait, then a changed number of open units once a minute at most
        (at the tail of a big job many ranks wait while units finish one by one)."""
        now = time.monotonic()
        if self.said == left or (self.said is not None and now - self.said_at < SAY_EVERY):
            return False
        self.said, self.said_at = left, now
        return True


def not_done_message(left: list[Unit], total: int, failures: list[UnitFailure],
                     claims: list[ClaimInfo], out_dir) -> str:
    """Why a run ends with units of the output not done although it did all it could claim
    (another process gave them up, or still holds them): its exit 3 is explained here, with
    a few unit ids per reason."""
    ids = {u.id for u in left}
    given_up = {f.unit_id: f for f in failures if f.unit_id in ids}
    held = {c.unit_id: c for c in claims if c.unit_id in ids and c.unit_id not in given_up}
    rest = sorted(ids - set(given_up) - set(held))
    parts = []
    if given_up:
        parts.append(f"{units(len(given_up))} given up by another process ("
                     + "; ".join(f"{f.unit_id} ({f.unit_name}) by {f.owner}: {f.reason[:200]}"
                                 for f in list(given_up.values())[:3])
                     + ("; ..." if len(given_up) > 3 else "") + ")")
    if held:
        parts.append(f"{units(len(held))} still held by another process ("
                     + ", ".join(f"{c.unit_id} by {c.owner}" for c in list(held.values())[:3])
                     + (", ..." if len(held) > 3 else "") + ")")
    if rest:
        parts.append(f"{units(len(rest))} not claimed by any process ({', '.join(rest[:3])}"
                     + (", ..." if len(rest) > 3 else "") + ")")
    return (f"exit 3: {len(left)} of {units(total)} of {out_dir} not done: "
            + "; ".join(parts) + f". `webssl status {out_dir}` says more; rerun the same "
            "command to do them")
