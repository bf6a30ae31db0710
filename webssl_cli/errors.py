"""Error types shared by every stage.

Each error carries its exit code, so the CLI layer only has to print and exit:
usage/input problems exit 2, runtime failures exit 1 (see ``webssl extract --help``).
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3   # some units could not be completed (failed units, see the manifest)
EXIT_PREEMPTED = 4    # stopped by SIGTERM/SIGINT/SIGUSR1; rerun the same command to resume


# Exceptions that mean the code or its install is broken, never the image: a per-sample
# catch-all lets them through, so the unit fails (exit 3, retried by a rerun) instead of
# every sample being recorded as bad data in a unit marked done.
CODE_ERRORS: tuple[type[Exception], ...] = (NameError, ImportError)


class WebsslError(Exception):
    """A runtime failure with a message meant for the user (exit 1)."""

    exit_code = EXIT_RUNTIME


class UsageError(WebsslError):
    """Bad arguments or bad input given by the user (exit 2)."""

    exit_code = EXIT_USAGE


class ModelNotFoundError(UsageError):
    """A model name that does not resolve to a registry record."""


class CheckpointError(WebsslError):
    """A checkpoint that cannot be loaded into the chosen architecture."""


class WeightsMissingError(UsageError):
    """Weights are not cached and may not be downloaded (offline)."""


class Preempted(BaseException):
    """The run was asked to stop by a signal; finished units are kept. Raised by the signal
    handler wherever the main thread waits, which with ``--num-workers 0`` is inside a
    reader: a BaseException, like KeyboardInterrupt, so that no ``except Exception`` there
    turns the stop into a failed sample or a given-up unit. The runner catches it."""

    exit_code = EXIT_PREEMPTED


class StopSignal(BaseException):
    """A stop signal that came outside a run's own handling (start-up, planning, download).
    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it;
    the command's entry point turns it into exit 4."""

    exit_code = EXIT_PREEMPTED
