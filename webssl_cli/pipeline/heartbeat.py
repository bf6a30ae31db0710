"""The thread that renews the leases of the units a rank holds, so other ranks do not take
them over while they are slow to finish."""
from __future__ import annotations

import sys
import threading


class Heartbeat(threading.Thread):
    def __init__(self, claims, every: float) -> None:
        super().__init__(daemon=True, name="webssl-heartbeat")
        self.claims, self.every = claims, every
        self.units: set[str] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            with self.lock:
                ids = list(self.units)
            for uid in ids:
                try:
                    self.claims.heartbeat(uid)
                except Exception as exc:   # taken over: the commit protocol decides later
                    print(f"warning: heartbeat for unit {uid}: {exc}", file=sys.stderr)
