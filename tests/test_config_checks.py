"""Bad option values are usage errors (exit 2, one line naming the option) before anything is
written; the API applies the same checks; a run's summary says when nothing got through."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from tests.extract_helpers import cli_args, config
from tests.helpers import images as img
from tests.helpers.cli import cli_here
from webssl_cli import extract, read_features
from webssl_cli.config import RuntimeConfig
from webssl_cli.pipeline.progress import Counters, summary


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    for i in range(3):
        (d / f"p{i}.jpg").write_bytes(img.make_jpeg(64, 48, seed=i))
    return d


@pytest.mark.parametrize("extra, option", [
    (["--batch-size", "0"], "--batch-size"),
    (["--lease", "0"], "--lease"),
    (["--lease", "-5"], "--lease"),
    (["--lease", "nan"], "--lease"),
    (["--num-workers", "-1"], "--num-workers"),
    (["--gpus", "-1"], "--gpus"),
    (["--limit-units", "-1"], "--limit-units"),
    (["--progress-every", "0"], "--progress-every"),
])
def test_bad_values_are_usage_errors(extra, option, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = cli_here(cli_args([photos], out, *extra))
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"error: {option} must"), r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()                     # refused before anything was written


def test_resolution_zero_is_refused(photos: Path, tmp_path: Path) -> None:
    args = cli_args([photos], tmp_path / "out")
    args[args.index("--resolution") + 1] = "0"
    r = cli_here(args)
    assert r.returncode == 2 and "--resolution must be a positive multiple" in r.stderr


@pytest.mark.parametrize("out", ["s3://bucket/feats", "https://host/feats", "pipe:cat"])
def test_url_outputs_are_refused(out: str, photos: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = cli_here(cli_args([photos], out))
    assert r.returncode == 2, r.stderr
    assert "output to URLs is not supported" in r.stderr
    assert list(tmp_path.iterdir()) == []       # no local folder named after the URL


@pytest.mark.parametrize("how", ["long name", "long path"])
def test_an_out_path_too_long_for_the_files_under_it_is_a_usage_error(how, photos: Path,
                                                                      tmp_path: Path) -> None:
    """A 300-byte folder name (over the 255 a file system allows), or a path that leaves
    no room for the files webssl writes under it: exit 2 naming --out, before anything."""
    left = 4050 - len(str(tmp_path))              # a 4050-byte path in 200-byte names
    out = (tmp_path / ("b" * 300) if how == "long name" else
           tmp_path.joinpath(*["c" * 200] * (left // 201), "d" * (left % 201 - 1)))
    r = cli_here(cli_args([photos], out))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"--out {out}" in r.stderr
    assert ("is 300 bytes, over the 255" if how == "long name" else
            "the path is too long") in r.stderr
    assert os.listdir(tmp_path) == []              # refused before anything was made


def test_local_path_that_looks_like_a_uri_is_a_folder(photos: Path, tmp_path: Path,
                                                      monkeypatch) -> None:
    """'c:/feats' on Linux is a relative folder 'c:', not a URI for pyarrow to parse."""
    monkeypatch.chdir(tmp_path)
    r = cli_here(cli_args([photos], "c:/feats", "--num-workers", "0"))
    assert r.returncode == 0, r.stderr
    keys, _ = read_features(tmp_path / "c:" / "feats")
    assert len(keys) == 3


def test_heartbeat_follows_a_short_lease() -> None:
    """The API derives the heartbeat from the lease as the CLI does: a 20 s lease with a 30 s
    heartbeat would make every live claim look stale to other ranks."""
    assert RuntimeConfig(lease_seconds=20).heartbeat == 5
    assert RuntimeConfig().heartbeat == 30
    assert RuntimeConfig(lease_seconds=20, heartbeat_seconds=2).heartbeat == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpus_without_a_gpu_is_refused(photos: Path, tmp_path: Path) -> None:
    args = cli_args([photos], tmp_path / "out", "--gpus", "2")
    i = args.index("--device")
    del args[i:i + 2]
    r = cli_here(args)
    assert r.returncode == 2, r.stderr
    assert "no CUDA device is visible" in r.stderr and "--device cpu" in r.stderr


def test_extract_from_a_thread(photos: Path, tmp_path: Path) -> None:
    """Off the main thread no signal handlers can be installed; the run still works."""
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=extract(config([photos], tmp_path / "out", workers=0))))
    t.start()
    t.join(timeout=300)
    assert result["r"].exit_code == 0
    assert len(read_features(tmp_path / "out")[0]) == 3


def test_summary_when_no_image_got_through() -> None:
    text = summary(Counters(failures=4), workers=1)
    assert "WARNING: all 4 samples read here failed" in text
    assert "the model is the bottleneck" not in text
    text = summary(Counters(), workers=1)
    assert "WARNING" not in text and "no image reached the model" in text


def test_api_takes_one_path_or_pathlib_paths(photos: Path, tmp_path: Path) -> None:
    """A single str (or Path) input is one input, not one per letter (which walked '/');
    pathlib.Path works wherever a path goes; list_models() needs no filter."""
    import dataclasses

    from webssl_cli import list_models
    from webssl_cli.config import InputConfig, ModelConfig, OutputConfig
    from tests.extract_helpers import SPEC, WEIGHTS
    base = config([photos], tmp_path / "a", workers=0)
    assert InputConfig(str(photos)).inputs == (str(photos),)
    assert InputConfig(photos).inputs == InputConfig([photos, str(photos)]).inputs[:1]
    cfg = dataclasses.replace(
        base, input=InputConfig(photos),
        model=dataclasses.replace(base.model, model_config=SPEC, weights=Path(WEIGHTS)),
        output=OutputConfig(tmp_path / "b", ("cls",), "parquet", "float32"))
    assert isinstance(cfg.model.weights, str) and isinstance(cfg.output.out_dir, str)
    assert extract(cfg).exit_code == 0
    assert len(read_features(tmp_path / "b")[0]) == 3
    assert len(list_models()) > 10 and isinstance(ModelConfig(cache_dir=tmp_path).cache_dir, str)


@pytest.mark.parametrize("runtime, option", [
    (dict(num_workers=1.5), "--num-workers"), (dict(gpus="2"), "--gpus"),
    (dict(limit_units=True), "--limit-units")])
def test_api_non_whole_numbers_are_usage_errors(runtime, option, photos, tmp_path) -> None:
    import dataclasses

    from webssl_cli.errors import UsageError
    cfg = config([photos], tmp_path / "o", workers=0)
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, **runtime))
    with pytest.raises(UsageError, match=f"{option} must be a whole number"):
        extract(cfg)
    assert not (tmp_path / "o").exists()


def _extract_in_pool_worker(args: tuple) -> str:
    photos, out = args
    from webssl_cli.errors import UsageError
    try:
        extract(config([photos], out, workers=2))
    except UsageError as exc:
        return str(exc)
    return "ran"


def test_extract_in_a_pool_worker_with_workers_says_what_to_do(photos, tmp_path) -> None:
    """A multiprocessing.Pool worker is daemonic: no DataLoader workers can start there (a
    bare AssertionError before); the error says to use num_workers=0."""
    import multiprocessing as mp
    with mp.get_context("spawn").Pool(1) as pool:
        said = pool.map(_extract_in_pool_worker, [(photos, tmp_path / "o")])[0]
    assert "daemonic process" in said and "num_workers=0" in said
