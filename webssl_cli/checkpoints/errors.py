"""Checkpoint error classes beyond ``webssl_cli.errors.CheckpointError`` (a runtime failure)."""
from __future__ import annotations

from ..errors import EXIT_USAGE, CheckpointError


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint that does not belong to the chosen architecture (missing or
    unexpected keys, wrong shapes, a contradicting config.json): the user gave weights and a
    model that do not go together, an input error (exit 2) like any other UsageError."""

    exit_code = EXIT_USAGE
