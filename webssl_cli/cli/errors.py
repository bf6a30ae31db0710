"""Turn API errors into one printed line and the documented exit code."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import typer

from ..errors import WebsslError


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Wrap a command body: WebsslError -> 'error: ...' on stderr and its exit code."""
    try:
        yield
    except WebsslError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
