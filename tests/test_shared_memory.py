"""A /dev/shm too small for the pieces DataLoader workers hand over (Docker's default is
64 MiB). A worker whose put fails there loses the piece without an error the main process
can see, and the run used to wait for input forever. Real runs in a private mount
namespace with a small tmpfs on /dev/shm: root only (skipped elsewhere)."""
from __future__ import annotations

import shlex
import subprocess

import pytest

from tests.extract_helpers import cli_args
from tests.helpers.cli import WEBSSL, child_env
from tests.helpers.images import write_shards
from webssl_cli import read_features
from webssl_cli.errors import UsageError
from webssl_cli.pipeline.shared_memory import (fit_prefetch, local_processes, shm_need,
                                               wait_for_room)

MiB = 1 << 20


def in_small_shm(size: str, args: list[str], stderr=subprocess.PIPE) -> subprocess.Popen:
    """``webssl ARGS`` in a mount namespace whose /dev/shm is a tmpfs of ``size``."""
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs "
                            "/dev/shm"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on /dev/shm here: {probe.stderr.strip()}")
    script = (f"mount -t tmpfs -o size={size} tmpfs /dev/shm && "
              f"exec {shlex.join([WEBSSL, *args])}")
    return subprocess.Popen(["unshare", "-m", "sh", "-c", script], stdout=subprocess.DEVNULL,
                            stderr=stderr, text=True, env=child_env({}))


def test_prefetch_is_lowered_to_fit_or_the_run_refused() -> None:
    said = []
    piece, batch = 4 * MiB, 8 * MiB          # 2 workers, batches of 2 pieces
    assert shm_need(2, 4, piece, batch, pinned=True) == 36 * MiB      # pinned: pieces only
    assert shm_need(2, 4, piece, batch, pinned=False) == 52 * MiB     # + 2 batches on CPU
    assert fit_prefetch(2, 4, piece, batch, True, 100 * MiB, said.append) == 4
    assert said == []
    assert fit_prefetch(2, 4, piece, batch, True, 40 * MiB, said.append) == 3  # 32 usable
    assert "lowered from 4 to 3" in said[0] and "--shm-size" in said[0]
    assert fit_prefetch(2, 4, piece, batch, False, 40 * MiB, said.append) == 1
    assert fit_prefetch(2, 4, piece, batch, True, None, said.append) == 4   # unknown: as asked
    assert fit_prefetch(0, 4, piece, batch, True, 1, said.append) == 4      # no workers
    with pytest.raises(UsageError, match=r"that needs 15 MiB free.*--num-workers 0"):
        fit_prefetch(2, 4, piece, batch, True, 14 * MiB, said.append)
    with pytest.raises(UsageError, match=r"1/8 share of it per process"):
        fit_prefetch(2, 4, piece, batch, True, 14 * MiB, said.append, sharing=8)
    assert local_processes({"LOCAL_WORLD_SIZE": "8"}) == 8
    assert local_processes({"SLURM_NTASKS_PER_NODE": "4"}) == 4
    assert local_processes({}) == 1


def test_a_worker_waits_for_room_instead_of_losing_its_piece() -> None:
    room = iter([1 * MiB, 3 * MiB, 9 * MiB])
    said = []
    wait_for_room(4 * MiB, free=lambda: next(room), say=said.append)
    assert next(room, None) is None            # it looked until 2 pieces fitted
    wait_for_room(4 * MiB, free=lambda: None, say=said.append)   # no /dev/shm: no wait


def test_small_shm_is_refused_before_reading_and_fitted_when_it_can_be(tmp_path) -> None:
    shards = write_shards(tmp_path / "in", n_shards=2, per_shard=40, seed=3)
    # 56 px: 9 KiB an image; batches of 64, 2 workers: pieces of 32 images (0.3 MiB);
    # on a CPU device prefetch 4 needs about 3.8 MiB (2.6 MiB free at the least)
    args = cli_args([shards[0].parent], tmp_path / "out", "--num-workers", "2",
                    "--batch-size", "64")
    p = in_small_shm("1m", args)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert "/dev/shm has 1 MiB free" in err and "--shm-size" in err, err[-2000:]

    p = in_small_shm("3m", args)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert "prefetch is lowered from 4 to 1 per worker" in err, err[-2000:]
    assert len(read_features(tmp_path / "out")[0]) == 80

    # `webssl bench --input` reads through the same loader
    p = in_small_shm("1m", ["bench", "--input", str(shards[0].parent), "--num-workers", "2",
                            "--batch-size", "64", "--resolution", "56"])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2 and "/dev/shm has 1 MiB free" in err, err[-2000:]


def test_a_shm_filled_mid_run_stalls_the_input_and_loses_nothing(tmp_path) -> None:
    """/dev/shm fills up after the check (another process of the node): the workers wait
    for room instead of losing their pieces (a failed put loses one, with only a printed
    error), the stall says why, and once room is back the run completes with every row."""
    shard = write_shards(tmp_path / "in", n_shards=1, per_shard=200, seed=4)[0]
    filler = (f"pipe:head -c 7000000 /dev/zero > /dev/shm/fill; "
              f"(sleep 14; rm /dev/shm/fill) & cat {shlex.quote(str(shard))}")
    args = cli_args([filler], tmp_path / "out", "--num-workers", "2", "--batch-size", "16")
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        p = in_small_shm("6m", args, stderr=err)   # room for prefetch 4 at the start
    try:
        code = p.wait(timeout=180)
    finally:
        p.kill()
    text = log.read_text()
    assert code == 0 and "lowered" not in text, text[-3000:]
    assert "warning: the input stalls; /dev/shm has 0.0 MiB free" in text, text[-2000:]
    assert "unable to allocate shared memory" not in text, text[-2000:]
    assert len(read_features(tmp_path / "out")[0]) == 200
