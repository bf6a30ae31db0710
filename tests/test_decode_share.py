"""`--decode gpu --cpu-share`: the workers decode a share of the GPU-decodable JPEGs on the CPU.

The share's arithmetic (accumulator, balance), its visibility in forked workers, and whole runs
of the `--decode gpu` pipeline on the CPU device (tests/test_device_decode.py) with a fixed and
an automatic share: the same rows and features as `--decode cpu`, whatever the split."""
from __future__ import annotations

import multiprocessing as mp
import random
from pathlib import Path

import numpy as np
import pytest

from tests.extract_helpers import cli_args, config
from tests.helpers import images as img
from tests.helpers.pieces import loader_pieces
from tests.helpers.cli import cli_here
from tests.test_device_decode import device_decode_run, ledger
from webssl_cli import extract, read_features
from webssl_cli.pipeline.decode_share import (CpuPick, ShareEstimate, SharedShare,
                                              balanced_share, prior_share)


def test_pick_turns_a_share_into_exact_decisions() -> None:
    for share, every in ((0.0, None), (1.0, 1), (0.25, 4), (0.5, 2)):
        pick = CpuPick(SharedShare(share))
        got = [i for i in range(100) if pick()]
        want = [] if every is None else [i for i in range(100) if i % every == every - 1]
        assert got == want, share
    assert not any(CpuPick(None)() for _ in range(10))
    third = CpuPick(SharedShare(1 / 3))
    assert sum(third() for _ in range(300)) == 100


def test_balanced_share_equalizes_worker_and_thread_time_per_image() -> None:
    rng = random.Random(0)
    inside = 0
    for _ in range(500):
        w, r, c, g = rng.randint(1, 32), rng.uniform(0, 2e-3), rng.uniform(1e-3, 2e-2), rng.uniform(1e-4, 3e-3)
        e = rng.uniform(0.2, 1.0)
        f = rng.uniform(0, 1 - e)
        s = balanced_share(w, r, c, g, e, f)
        assert 0.0 <= s <= 1.0
        workers, thread = (r + c * (f + e * s)) / w, g * e * (1 - s)
        if 0 < s < 1:
            inside += 1
            assert workers == pytest.approx(thread, rel=1e-9)
        elif s == 0:
            assert workers >= thread     # the workers are slower even doing no GPU JPEG
        else:
            assert workers <= thread
    assert inside > 100
    # the H100 run's numbers: 14 workers at ~8.6 ms per decode, the thread at ~0.67 ms
    assert balanced_share(14, 0.0, 8.6e-3, 0.67e-3, 1.0, 0.0) == pytest.approx(0.52, abs=0.01)
    assert balanced_share(0, 0.0, 8e-3, 1e-3, 1.0, 0.0) == 0.0
    assert balanced_share(4, 0.0, 8e-3, 1e-3, 0.0, 1.0) == 0.0     # nothing GPU-decodable
    assert prior_share(0) == 0.0 and 0 < prior_share(2) < prior_share(14) < 0.5


def test_estimate_follows_measured_costs_and_keeps_a_fixed_share() -> None:
    est = ShareEstimate(8, None)
    assert est.share.value == pytest.approx(prior_share(8))
    est.observe(64, 64 * 1e-4 + 24 * 5e-3, 24, 24 * 5e-3, 64, 24)
    est.on_thread_batch(64, 5.0)          # nvJPEG's start-up: not counted
    assert est.estimate() is None and est.share.value == pytest.approx(prior_share(8))
    # pieces of 64: 40 raw, 24 decoded here (all picked), 5 ms each; reading 0.1 ms each
    for _ in range(50):
        est.observe(64, 64 * 1e-4 + 24 * 5e-3, 24, 24 * 5e-3, 64, 24)
        est.on_thread_batch(40, 40 * 2e-3)
    want = balanced_share(8, 1e-4, 5e-3, 2e-3, 1.0, 0.0)
    assert est.estimate() == pytest.approx(want, rel=1e-6)
    assert est.share.value == pytest.approx(want, rel=1e-6)
    assert est.picked_fraction() == pytest.approx(24 / 64)
    # the decode thread gets 4x faster: the share follows it down within a few dozen batches
    for _ in range(100):
        est.observe(64, 64 * 1e-4 + 24 * 5e-3, 24, 24 * 5e-3, 64, 24)
        est.on_thread_batch(40, 40 * 0.5e-3)
    assert est.share.value == pytest.approx(balanced_share(8, 1e-4, 5e-3, 0.5e-3, 1.0, 0.0),
                                            abs=0.02)
    fixed = ShareEstimate(8, 0.3)
    for _ in range(20):
        fixed.observe(64, 0.2, 20, 0.1, 64, 20)
        fixed.on_thread_batch(44, 0.5)
    assert fixed.share.value == 0.3
    assert ShareEstimate(0, None).share.value == 0.0    # no workers: the main thread reads
    assert ShareEstimate(4, None).picked_fraction() is None      # nothing GPU-decodable yet


def _child(share: SharedShare, go, q) -> None:
    q.put(share.value)
    go.wait(30)
    q.put(share.value)


def test_a_forked_worker_sees_the_share_the_main_process_sets_later() -> None:
    ctx = mp.get_context("fork")
    share, go, q = SharedShare(0.1), ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_child, args=(share, go, q))
    p.start()
    try:
        assert q.get(timeout=30) == 0.1
        share.value = 0.7
        go.set()
        assert q.get(timeout=30) == 0.7
    finally:
        p.join(30)


def _shard_folder(tmp_path: Path) -> Path:
    root = tmp_path / "mixed"
    root.mkdir()
    files = {f"good{i:02d}.jpg": img.make_jpeg(60 + 7 * i, 50 + 5 * i, i) for i in range(20)}
    files.update(img.broken_and_special())
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0, None])
def test_any_split_gives_the_rows_features_and_ledger_of_cpu_decoding(tmp_path: Path,
                                                                      share) -> None:
    root = _shard_folder(tmp_path)
    cpu_out, dev_out = tmp_path / "cpu", tmp_path / "device"
    assert extract(config([root], cpu_out, shard_size=6, batch=4)).exit_code == 0
    res = device_decode_run(config([root], dev_out, shard_size=6, batch=4), share)
    assert res.exit_code == 0
    assert ledger(dev_out) == ledger(cpu_out)
    cpu_keys, cpu_cls = read_features(cpu_out)
    dev_keys, dev_cls = read_features(dev_out)
    assert dev_keys == cpu_keys
    assert _cos(cpu_cls, dev_cls).min() >= 0.999
    mode = "auto" if share is None else f"{share:g}"
    assert (f"{res.cpu_share:.0%} of the GPU-decodable JPEGs decoded on the CPU "
            f"(--cpu-share {mode})") in res.summary
    if share == 1.0:
        assert res.cpu_share == 1.0 and res.decode_thread_seconds == 0.0
    elif share == 0.0:
        assert res.cpu_share == 0.0 and res.decode_thread_seconds > 0
    elif share == 0.5:     # each of the 2 workers decodes every second eligible JPEG it reads
        assert 0.3 <= res.cpu_share <= 0.7
    else:                  # auto: starts at the prior for 2 workers, then balances
        assert 0.0 < res.cpu_share < 1.0


@pytest.mark.parametrize("args, said", [
    (["--decode", "gpu", "--cpu-share", "1.5"], "--cpu-share must be auto or a number from 0 to 1"),
    (["--decode", "gpu", "--cpu-share", "half"], "--cpu-share must be auto or a number from 0 to 1"),
    (["--cpu-share", "0.5"], "--cpu-share only applies with --decode gpu"),
])
def test_bad_cpu_share_is_a_usage_error(tmp_path: Path, args, said) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(img.make_jpeg(40, 40, 1))
    r = cli_here(cli_args([tmp_path / "in"], tmp_path / "out", *args))
    assert r.returncode == 2, r.stderr
    assert said in r.stderr


@pytest.mark.parametrize("workers", [0, 1])
def test_a_pieces_busy_time_leaves_out_the_time_it_waited_to_be_taken(tmp_path: Path,
                                                                       workers) -> None:
    """The estimate's worker cost: a piece's ``decode_seconds`` is the time spent reading and
    decoding it, not the time the worker sat after handing over the piece before (the
    loader's prefetch full, or with no workers the main thread busy elsewhere): 8 pieces of
    tiny JPEGs taken 0.3 s apart."""
    import time

    from webssl_cli.config import InputConfig, PreprocessConfig
    root = tmp_path / "jpegs"
    root.mkdir()
    for i in range(16):
        (root / f"{i:02d}.jpg").write_bytes(img.make_jpeg(48, 40, i))
    icfg = InputConfig((str(root),))
    pieces = []
    for b in loader_pieces(icfg, PreprocessConfig(28), 2, workers, prefetch_factor=1):
        if not b.end:
            pieces.append(b.decode_seconds)
            time.sleep(0.3)
    assert len(pieces) == 8
    assert max(pieces) < 0.15, pieces      # each piece would carry ~0.3 s of waiting before


def test_at_the_tail_fewer_busy_workers_keep_less_for_themselves() -> None:
    est = ShareEstimate(8, None)
    for _ in range(40):
        est.observe(64, 64 * 1e-4 + 24 * 5e-3, 24, 24 * 5e-3, 64, 24)
        est.on_thread_batch(40, 40 * 2e-3)
    all_busy = est.share.value
    est.busy_parts(2)                        # two parts left: two workers still reading
    est.observe(64, 64 * 1e-4 + 24 * 5e-3, 24, 24 * 5e-3, 64, 24)
    assert est.share.value == pytest.approx(balanced_share(2, 1e-4, 5e-3, 2e-3, 1.0, 0.0),
                                            rel=0.05)
    assert est.share.value < all_busy - 0.3          # 0.43 instead of 0.76
    est.busy_parts(50)                       # more parts than workers: all of them
    est.observe(64, 64 * 1e-4 + 24 * 5e-3, 24, 24 * 5e-3, 64, 24)
    assert est.share.value == pytest.approx(all_busy, rel=0.05)
