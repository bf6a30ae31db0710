"""Dynamic claiming of units by ranks on a shared filesystem, with heartbeats and leases.

A claim on unit ``U`` is a file ``<manifest>/claims/U.<generation>.json``; the newest
generation is the current claim. Claiming means creating the next generation with
exclusive create: a free unit gets generation 0, a stale one (heartbeat older than the
lease) ``newest + 1``. Two ranks racing for the same stale claim both try to create the
same next generation, so exactly one wins, and a fresh claim can never be taken: its
successor generation would have to be created first. A rank whose claim has a newer
generation beside it has lost it (``heartbeat`` raises ClaimLostError). Claims only
decide who works on a unit; the done-record alone decides that it is finished.

A claim whose writer is known to have exited (same machine, see liveness.py) is stale at
once, whatever its age: a rerun after a crash takes the dead run's units over immediately.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import WebsslError
from ..units import Unit
from ..atomic_io import atomic_write_bytes, exclusive_create, remove_quietly
from .commit import read_intent, roll_forward
from .layout import OutputLayout
from .liveness import is_gone, this_process
from .records import ClaimInfo, dumps, utc_now

_NAME = re.compile(r"^(?P<unit>[^.]+)\.(?P<gen>\d+)\.json$")


class ClaimLostError(WebsslError):
    """Another rank took over this rank's claim (its heartbeat was older than the lease)."""


def _scan(layout: OutputLayout) -> dict[str, list[int]]:
    """unit id -> claim generations present, ascending."""
    out: dict[str, list[int]] = {}
    try:
        names = os.listdir(layout.claims_dir)
    except FileNotFoundError:
        return out
    for name in names:
        m = _NAME.match(name)
        if m:
            out.setdefault(m["unit"], []).append(int(m["gen"]))
    for gens in out.values():
        gens.sort()
    return out


def _claim_path(layout: OutputLayout, unit_id: str, gen: int) -> Path:
    return layout.claims_dir / f"{unit_id}.{gen:06d}.json"


def _age(path: Path, now: float) -> float | None:
    try:
        return max(0.0, now - path.stat().st_mtime)
    except FileNotFoundError:
        return None


def _read_claim(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (FileNotFoundError, ValueError):
        return {}


def _live(path: Path, age: float | None, lease: float) -> bool:
    """A claim still held: younger than the longer of ``lease`` and the lease its owner
    wrote into it (a rank run with a shorter --lease must not take a claim over before its
    owner's own heartbeat is due), and its process not known to be gone."""
    if age is None:
        return False
    info = _read_claim(path)
    try:
        own = float(info.get("lease_seconds") or 0.0)
    except (TypeError, ValueError):
        own = 0.0
    return age <= max(lease, own) and not is_gone(info.get("process"))


def list_claims(layout: OutputLayout, default_lease: float = 300.0) -> list[ClaimInfo]:
    """The current (newest) claim of every claimed unit, sorted by unit id."""
    now = time.time()
    infos = []
    for unit_id, gens in sorted(_scan(layout).items()):
        path = _claim_path(layout, unit_id, gens[-1])
        age = _age(path, now)
        if age is None:
            continue
        data = _read_claim(path)
        lease = float(data.get("lease_seconds") or default_lease)
        gone = is_gone(data.get("process"))
        infos.append(ClaimInfo(unit_id=unit_id, owner=str(data.get("owner", "?")),
                               age_seconds=round(age, 3), stale=gone or age > lease,
                               generation=gens[-1], lease_seconds=lease, owner_gone=gone))
    return infos


@contextlib.contextmanager
def hold_unit(layout: OutputLayout, unit_id: str, owner: str,
              lease_seconds: float = 300.0) -> Iterator[bool]:
    """Claim ``unit_id`` by the claim protocol whatever its state (a finished unit too, to
    reopen it): yields True when this process created the next claim generation and no
    live claim of another process is in the way, else False. The claim is removed on exit.
    Two processes holding the same unit is impossible, so work done under it is never
    repeated by a concurrent caller."""
    gens = _scan(layout).get(unit_id, [])
    nxt = 0
    if gens:
        newest = _claim_path(layout, unit_id, gens[-1])
        age = _age(newest, time.time())
        live = _live(newest, age, lease_seconds)
        nxt = -1 if live else gens[-1] + 1
    path = _claim_path(layout, unit_id, max(nxt, 0))
    data = {"unit_id": unit_id, "owner": owner, "generation": nxt, "claimed_at": utc_now(),
            "heartbeat_at": utc_now(), "beats": 0, "lease_seconds": lease_seconds,
            "process": this_process()}
    if nxt < 0 or not exclusive_create(path, dumps(data)):
        yield False
        return
    try:
        gens = _scan(layout).get(unit_id, [])
        ok = not (gens and gens[-1] > nxt)
        for old in gens if ok else ():
            if old < nxt:                        # dead owners' generations
                remove_quietly(_claim_path(layout, unit_id, old))
        yield ok
    finally:
        remove_quietly(path)


class ClaimStore:
    """The claims of one rank (``owner``, e.g. ``host:pid:rank3``)."""

    def __init__(self, layout: OutputLayout, owner: str, lease_seconds: float) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.layout = layout
        self.owner = owner
        self.lease_seconds = float(lease_seconds)
        self._held: dict[str, tuple[int, Path, dict]] = {}
        self._released: set[str] = set()
        self._committed: set[str] = set()
        self._lock = threading.Lock()       # heartbeat thread vs claim/release callers
        layout.claims_dir.mkdir(parents=True, exist_ok=True)

    @property
    def held(self) -> list[str]:
        return sorted(self._held)

    def claim_next(self, units: list[Unit], done: set[str], start: int = 0) -> Unit | None:
        """Claim the first undone unit, from position ``start`` on (then wrapping around),
        that is unclaimed or whose claim is stale. A rank passes the position after its last
        claim, so a claim does not walk past all the units done before it (at tens of
        thousands of units that walk cost more than the unit's work)."""
        scan = _scan(self.layout)
        now = time.time()
        start = start % len(units) if units else 0
        for unit in itertools.chain(units[start:], units[:start]):
            uid = unit.id
            if uid in done or uid in self._committed or uid in self._held:
                continue
            gens = scan.get(uid)
            nxt = 0
            if gens:
                path = _claim_path(self.layout, uid, gens[-1])
                age = _age(path, now)
                if _live(path, age, self.lease_seconds):
                    continue                     # live claim of another rank
                nxt = gens[-1] + 1
            if self._is_committed(uid):
                continue
            if self._try_claim(uid, nxt):
                return unit
        return None

    def _try_claim(self, uid: str, gen: int) -> bool:
        path = _claim_path(self.layout, uid, gen)
        data = {"unit_id": uid, "owner": self.owner, "generation": gen, "claimed_at": utc_now(),
                "heartbeat_at": utc_now(), "beats": 0, "lease_seconds": self.lease_seconds,
                "process": this_process()}
        if not exclusive_create(path, dumps(data)):
            return False
        gens = _scan(self.layout).get(uid, [])
        if (gens and gens[-1] > gen) or self._is_committed(uid):
            remove_quietly(path)                 # claimed from an outdated view: back off
            return False
        for old in gens:
            if old < gen:                        # dead owners' generations
                remove_quietly(_claim_path(self.layout, uid, old))
        with self._lock:
            self._held[uid] = (gen, path, data)
            self._released.discard(uid)
        return True

    def _is_committed(self, uid: str) -> bool:
        """True if the unit has a commit intent; finishes it if its committer seems dead."""
        intent_path = self.layout.commit_path(uid)
        age = _age(intent_path, time.time())
        if age is None:
            return False
        self._committed.add(uid)
        if self.layout.done_path(uid).exists():
            return True
        intent = read_intent(self.layout, uid)
        if intent is not None and (age > self.lease_seconds or is_gone(intent.get("process"))):
            roll_forward(self.layout, intent)
        return True

    def heartbeat(self, unit_id: str) -> None:
        """Refresh this rank's claim (content and mtime); ClaimLostError if it was taken over.

        A unit this store already released is skipped silently (a heartbeat thread may
        still hold it in its list)."""
        with self._lock:
            if unit_id in self._released:
                return
            held = self._held.get(unit_id)
            if held is None:
                raise ClaimLostError(f"unit {unit_id} is not claimed by {self.owner}")
            gen, path, data = held
            gens = _scan(self.layout).get(unit_id, [])
            if gen not in gens or gens[-1] > gen:
                self._held.pop(unit_id, None)
                newer = _read_claim(_claim_path(self.layout, unit_id, gens[-1])) if gens else {}
                raise ClaimLostError(
                    f"the claim of {self.owner} on unit {unit_id} ({path}) was taken over by "
                    f"{newer.get('owner', 'another rank')} after its heartbeat was older than "
                    f"the {self.lease_seconds:g} s lease (or this process looked gone); this "
                    "rank's result for the unit will be discarded if the other rank commits first")
            data = {**data, "heartbeat_at": utc_now(), "beats": int(data.get("beats", 0)) + 1}
            atomic_write_bytes(path, dumps(data))
            self._held[unit_id] = (gen, path, data)

    def release(self, unit_id: str) -> None:
        """Drop this rank's claim (after commit, or to give the unit back)."""
        with self._lock:
            held = self._held.pop(unit_id, None)
            if held is not None:
                self._released.add(unit_id)
                remove_quietly(held[1])

    def release_all(self) -> None:
        for uid in list(self._held):
            self.release(uid)

    def active_claims(self) -> list[ClaimInfo]:
        """Every unit's current claim (any owner) with its heartbeat age and staleness."""
        return list_claims(self.layout, self.lease_seconds)
