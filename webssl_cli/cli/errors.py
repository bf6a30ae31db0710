"""Turn API errors into one printed line and the documented exit code."""
from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator

import typer

from ..errors import EXIT_RUNTIME, WebsslError


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Wrap a command body: WebsslError -> 'error: ...' on stderr and its exit code; an
    OSError no stage turned into a message (a folder without read permission) -> 'error:
    FILE: reason', exit 1, not a traceback."""
    try:
        yield
    except WebsslError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:    # the environment failed where no stage says more (permissions)
        where = f"{exc.filename}: " if exc.filename else ""
        advice = _ADVICE.get(exc.errno or 0, "")
        print(f"error: {where}{exc.strerror or exc}{advice}", file=sys.stderr)
        raise typer.Exit(EXIT_RUNTIME) from None


_FULL = "; free space on that filesystem (or choose another folder), then rerun the command"
_ADVICE = {
    errno.ENOSPC: _FULL, errno.EDQUOT: _FULL,
    errno.EROFS: "; the filesystem is read-only: make it writable, then rerun the command",
    errno.EACCES: "; check the permissions of that path, then rerun the command",
    errno.EPERM: "; check the permissions and attributes (chattr) of that path, then rerun "
                 "the command",
    errno.ENAMETOOLONG: "; the path is too long: choose a shorter one",
    errno.EMFILE: "; this process may open no more files: raise the limit (ulimit -n, e.g. "
                  "to 65536) or lower --num-workers, then rerun the command",
}
