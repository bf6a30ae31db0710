"""The --gpus launcher's exit code from its workers' (the real processes are exercised in
test_distributed.py)."""
from __future__ import annotations

import pytest

from webssl_cli.distributed.launcher import exit_code, worker_report


@pytest.mark.parametrize("codes, complete, stopped, expected", [
    ([0, 0], True, False, 0),
    ([0, -9], True, False, 0),      # a worker died, the other finished its units
    ([0, 1], True, False, 0),       # same for a worker that failed: the output is complete
    ([0, -9], False, False, 1),     # killed from outside, output incomplete: rerun
    ([4, 4], False, True, 4),       # Ctrl-C to the launcher
    ([0, -15], True, True, 4),      # stopped by us before the end: never claim success
    ([0, 3], False, False, 3),      # a unit given up
    ([3, 4], False, False, 4),
    ([0, 1], False, False, 1),
    ([0, 0], False, False, 3),      # all workers 0, yet units missing: never claim success
    ([0, 0], True, True, 0),        # stopped after everything was done
    ([], False, True, 4),           # stopped before any worker started
    ([2, 2], False, False, 2),      # every worker refused its settings (a /dev/shm too small)
    ([2, 0], False, False, 1),      # one refused (a share checked late), the other ran
])
def test_exit_code(codes, complete, stopped, expected) -> None:
    assert exit_code(codes, complete=complete, stopped=stopped) == expected


def test_worker_report_names_signals() -> None:
    assert worker_report([0, -9, 3]) == "rank 0 exit 0, rank 1 killed by SIGKILL, rank 2 exit 3"
