"""Errors of the reading stage.

:class:`ReadError` means a whole unit could not be read to its end (truncated tar, dropped
connection, failing ``pipe:`` command, unreadable parquet). The runner marks that unit failed
and writes nothing for it; samples that fail one by one are never raised (see ``iter_samples``).
"""
from __future__ import annotations

from typing import Any

from ..errors import WebsslError
from ..units import Unit


class ReadError(WebsslError):
    """A unit whose source failed mid-stream; ``unit`` is None only after a round trip
    through torch's DataLoader worker re-raise, which rebuilds exceptions from the message."""

    def __init__(self, unit: Unit | str | None, message: str = "") -> None:
        if isinstance(unit, str) and not message:   # rebuilt from a message alone
            unit, message = None, unit
        self.unit = unit if isinstance(unit, Unit) else None
        self.message = message
        text = f"{self.unit.source}: {message}" if self.unit is not None else message
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.unit, self.message))


class TarFormatError(Exception):
    """The byte stream is not (or stops being) a valid tar archive."""


class StreamError(Exception):
    """A source that cannot be opened or that ended badly (message says why)."""


class NotARegularFile(OSError):
    """A local input path that is a FIFO, device or socket (reading it could block forever)."""
