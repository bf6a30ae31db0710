"""Rank detection from launcher environments; half-set environments are errors."""
from __future__ import annotations

import pytest

from webssl_cli.distributed import detect_rank
from webssl_cli.errors import UsageError


def test_single_process() -> None:
    r = detect_rank({})
    assert (r.rank, r.world_size, r.local_rank, r.launcher) == (0, 1, 0, "single")
    assert r.is_planner


def test_torchrun() -> None:
    r = detect_rank({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (r.rank, r.world_size, r.local_rank, r.launcher) == (5, 8, 1, "torchrun")
    assert not r.is_planner


def test_torchrun_wins_over_slurm() -> None:
    r = detect_rank({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
                     "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0"})
    assert r.launcher == "torchrun" and r.rank == 1


def test_slurm_tasks() -> None:
    r = detect_rank({"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1"})
    assert (r.rank, r.world_size, r.local_rank, r.launcher) == (9, 16, 1, "slurm")


def test_slurm_array_with_several_tasks_per_element() -> None:
    env = {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "10",
           "SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "1"}
    r = detect_rank(env)
    assert (r.rank, r.world_size, r.launcher) == (5, 8, "slurm-array")
    assert r.is_planner      # any array task may write the plan (first exclusive create wins)


@pytest.mark.parametrize("task_id, expected", [("17", (14, 15)),     # --array=3,17,42
                                               ("41", (38, 39))])     # --array=3-63:2
def test_sparse_slurm_array_is_accepted(task_id: str, expected) -> None:
    """Resubmitting failed indices (--array=3,17,42) or stepped arrays give task ids beyond
    MIN + COUNT; such a task still runs (any array task may plan; units are claimed)."""
    r = detect_rank({"SLURM_ARRAY_TASK_ID": task_id, "SLURM_ARRAY_TASK_COUNT": "3",
                     "SLURM_ARRAY_TASK_MIN": "3", "SLURM_PROCID": "0", "SLURM_NTASKS": "1",
                     "SLURM_LOCALID": "0"})
    assert (r.rank, r.world_size, r.launcher) == (*expected, "slurm-array")
    assert r.is_planner


@pytest.mark.parametrize("env", [{"RANK": "0"}, {"RANK": "0", "WORLD_SIZE": "2"},
                                 {"SLURM_PROCID": "0", "SLURM_NTASKS": "2"},
                                 {"SLURM_ARRAY_TASK_ID": "3"}])
def test_half_set_environment_is_an_error(env: dict) -> None:
    with pytest.raises(UsageError, match="half set"):
        detect_rank(env)


def test_inconsistent_rank_is_an_error() -> None:
    with pytest.raises(UsageError, match="inconsistent"):
        detect_rank({"RANK": "4", "WORLD_SIZE": "4", "LOCAL_RANK": "0"})


SLURM_TASK = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "3"}


@pytest.mark.parametrize("env, job", [
    ({}, ""),                                               # a lone process: its own job
    ({**SLURM_TASK, "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0"}, "slurm:4242.0:0"),
    ({**SLURM_TASK, "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_RESTART_COUNT": "2"},
     "slurm:4242.0:2"),                                     # requeued: another job
    ({**SLURM_TASK, "SLURM_JOB_ID": "4251", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_STEP_ID": "0",
      "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, "slurm:4242.0:0"),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "abc",
      "TORCHELASTIC_RESTART_COUNT": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"},
     "torchrun:abc@n1:29500:1"),
    # torchrun without --rdzv-id: run id "none" for every launch; --standalone's new port
    # tells launches apart
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "TORCHELASTIC_RUN_ID": "none",
      "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "41733"}, "torchrun:none@127.0.0.1:41733:0"),
    ({**SLURM_TASK, "SLURM_JOB_ID": "4242", "WEBSSL_JOB_ID": "mine"}, "mine"),
    # a lone process (a batch script's sbatch retry line): its own job, so it retries what
    # an earlier run in the same allocation gave up
    ({"SLURM_JOB_ID": "4242"}, ""),
    ({"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "3"}, ""),
    ({"WEBSSL_JOB_ID": "mine"}, "mine"),
])
def test_job_id_is_shared_by_the_ranks_of_one_job(env, job) -> None:
    """The ranks of one job (all array tasks included) share it; a requeue or a new step
    is another job, so it retries the units an earlier job gave up on."""
    assert detect_rank(env).job == job


def test_rerun_in_the_same_allocation_retries_what_an_earlier_run_gave_up(tmp_path) -> None:
    """An sbatch script's retry line (`webssl extract ... || webssl extract ...`) runs in one
    SLURM job: the second run used to count the first run's given-up unit as "failed on
    another rank of this job", skip it and exit 0 on an incomplete output."""
    from tests.extract_helpers import cli_args
    from tests.helpers.cli import cli_here
    from tests.helpers.images import write_shards
    good = write_shards(tmp_path / "in", 1, 4)[0]
    cut = tmp_path / "in" / "shard-000001.tar"
    cut.write_bytes(good.read_bytes()[:3000])                 # truncated: given up
    args = cli_args([tmp_path / "in"], tmp_path / "out", "--num-workers", "0")
    env = {"SLURM_JOB_ID": "4242"}
    first = cli_here(args, env=env)
    assert first.returncode == 3, first.stderr
    again = cli_here(args, env=env)
    assert again.returncode == 3, again.stderr           # retried (still truncated): not 0
    assert "failed on other ranks" not in again.stderr
