"""A low limit on open files (ulimit -n): DataLoader workers, their queues and the handles
of the pieces they pass take many. The soft limit is lifted to the hard one; a hard limit
too low ends the run with what to do (exit 1), never a hang: the workers already forked
when the next fork failed were never stopped, and the interpreter's exit waited for them
forever. Real runs of the CLI with real limits."""
from __future__ import annotations

import resource
import subprocess

import pytest

from tests.extract_helpers import cli_args
from tests.helpers.cli import WEBSSL, child_env
from tests.helpers.images import write_shards
from webssl_cli import read_features


def run_limited(args: list[str], soft: int, hard: int) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        return subprocess.run([WEBSSL, *args], capture_output=True, text=True,
                              env=child_env({}), preexec_fn=limit, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the run hung")


@pytest.fixture
def shards(tmp_path):
    return write_shards(tmp_path / "in", n_shards=2, per_shard=40, seed=7)[0].parent


def test_a_low_soft_limit_is_lifted(tmp_path, shards) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 256:
        pytest.skip(f"the hard limit here is {hard}")
    r = run_limited(cli_args([shards], tmp_path / "out", "--num-workers", "4"), 20, hard)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(read_features(tmp_path / "out")[0]) == 80


@pytest.mark.parametrize("limit", [20, 28])
def test_a_low_hard_limit_ends_the_run_with_what_to_do(tmp_path, shards, limit) -> None:
    """20: the fork of a later worker fails; 28: receiving a piece fails (here)."""
    r = run_limited(cli_args([shards], tmp_path / "out", "--num-workers", "4"), limit, limit)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Too many open files" in r.stderr and "raise the limit (ulimit -n" in r.stderr, \
        r.stderr[-3000:]
    assert "Exception ignored in" not in r.stderr, r.stderr[-3000:]
