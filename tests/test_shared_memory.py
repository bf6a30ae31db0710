"""A /dev/shm too small for the pieces DataLoader workers hand over (Docker's default is
64 MiB). A worker whose put fails there loses the piece without an error the main process
can see, and the run used to wait for input forever. Real runs in a private mount
namespace with a small tmpfs on /dev/shm: root only (skipped elsewhere)."""
from __future__ import annotations

import shlex
import subprocess
import time

import pytest

from tests.extract_helpers import cli_args
from tests.helpers.cli import WEBSSL, child_env
from tests.helpers.images import write_shards
from webssl_cli import read_features
from webssl_cli.errors import UsageError
from webssl_cli.pipeline.shared_memory import fit_prefetch, shm_need

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
    assert fit_prefetch(2, 4, piece, batch, 100 * MiB, said.append) == 4
    assert shm_need(2, 4, piece, batch) == 48 * MiB and said == []
    assert fit_prefetch(2, 4, piece, batch, 40 * MiB, said.append) == 2   # 32 MiB usable
    assert "lowered from 4 to 2" in said[0] and "--shm-size" in said[0]
    assert fit_prefetch(2, 4, piece, batch, None, said.append) == 4       # unknown: as asked
    assert fit_prefetch(0, 4, piece, batch, 1, said.append) == 4          # no workers
    with pytest.raises(UsageError, match="not even one piece per worker fits.*--num-workers 0"):
        fit_prefetch(2, 4, piece, batch, 20 * MiB, said.append)


def test_small_shm_is_refused_before_reading_and_fitted_when_it_can_be(tmp_path) -> None:
    shards = write_shards(tmp_path / "in", n_shards=2, per_shard=40, seed=3)
    # 56 px: 9 KiB an image; batches of 64, 2 workers: pieces of 32 images (0.3 MiB);
    # prefetch 4 needs about 3.5 MiB
    args = cli_args([shards[0].parent], tmp_path / "out", "--num-workers", "2",
                    "--batch-size", "64")
    p = in_small_shm("1m", args)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert "/dev/shm has 1 MiB free" in err and "--shm-size" in err, err[-2000:]

    p = in_small_shm("3m", args)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert "prefetch is lowered from 4 to 2 per worker" in err, err[-2000:]
    assert len(read_features(tmp_path / "out")[0]) == 80

    # `webssl bench --input` reads through the same loader
    p = in_small_shm("1m", ["bench", "--input", str(shards[0].parent), "--num-workers", "2",
                            "--batch-size", "64", "--resolution", "56"])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2 and "/dev/shm has 1 MiB free" in err, err[-2000:]


@pytest.mark.parametrize("images,batch,outcome", [
    (40, 64, "could not be completed: accounting mismatch"),   # 2 pieces lost
    (200, 16, "warning: the input stalls; /dev/shm has"),      # 13 pieces lost
])
def test_pieces_lost_to_a_full_shm_are_explained(tmp_path, images, batch, outcome) -> None:
    """/dev/shm fills up after the check (another process of the node): the workers' pieces
    are lost (their error is only printed, in the worker). When fewer than the loader's
    prefetch (2 workers x 4) are lost, the unit's end marker still arrives and the unit
    fails its accounting; when more are, the loader stops asking the workers for more and
    the input stalls. Either way the run now says that /dev/shm is full."""
    shard = write_shards(tmp_path / "in", n_shards=1, per_shard=images, seed=4)[0]
    filler = f"pipe:head -c 7000000 /dev/zero > /dev/shm/fill; cat {shlex.quote(str(shard))}"
    args = cli_args([filler], tmp_path / "out", "--num-workers", "2", "--batch-size",
                    str(batch))
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        p = in_small_shm("6m", args, stderr=err)   # room for prefetch 4 at the start
    try:
        deadline = time.monotonic() + 120
        while outcome not in log.read_text() and p.poll() is None:
            assert time.monotonic() < deadline, "neither an end nor a warning came"
            time.sleep(0.5)
    finally:
        p.kill()
        p.wait()
    text = log.read_text()
    assert "lowered" not in text and outcome in text, text[-2000:]
    assert "MiB free, less than two pieces of decoded images" in text, text[-2000:]
