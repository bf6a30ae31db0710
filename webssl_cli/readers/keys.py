"""Making sample keys unique within a unit: a key already taken gets ``#2``, ``#3``... (the
first suffix not taken by any key seen so far, real or made, so a made key never collides
with a real one that came before it)."""
from __future__ import annotations


class KeyDeduper:
    """``deduper(key)`` -> ``key``, or ``key#N`` (smallest N >= 2 not yet used) when taken."""

    def __init__(self, reserved: set[str] | None = None) -> None:
        self.used: set[str] = set()
        self.reserved = reserved or set()   # keys that will appear later as themselves
        self._next: dict[str, int] = {}

    def __call__(self, key: str) -> str:
        if key not in self.used:
            self.used.add(key)
            return key
        return self.fresh(key)

    def made(self, candidate: str) -> str:
        """A key webssl makes up (no key of its own): ``candidate`` unless used or reserved."""
        if candidate in self.used or candidate in self.reserved:
            return self.fresh(candidate)
        self.used.add(candidate)
        return candidate

    def fresh(self, base: str) -> str:
        """A new key ``base#N`` that is neither used nor reserved."""
        n = self._next.get(base, 2)
        while f"{base}#{n}" in self.used or f"{base}#{n}" in self.reserved:
            n += 1
        self._next[base] = n + 1
        made = f"{base}#{n}"
        self.used.add(made)
        return made
