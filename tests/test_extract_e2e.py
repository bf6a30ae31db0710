"""`webssl extract` end to end on CPU with the official dino-tiny fixture model: folders,
WebDataset shards (local, S3 on SeaweedFS, HTTP, pipe:), parquet, both output formats."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.extract_helpers import cli_args, config, direct_cls
from tests.helpers import images as img
from tests.helpers.cli import cli_here, run_cli
from tests.helpers.servers import http_server, s3_server, upload_folder
from webssl_cli import extract, read_features
from webssl_cli.store import OutputLayout, done_units, get_status


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("shards")
    img.write_shards(d, n_shards=3, per_shard=5, seed=1)
    return d


@pytest.fixture(scope="module")
def local_run(shards: Path, tmp_path_factory) -> tuple[list[str], np.ndarray]:
    out = tmp_path_factory.mktemp("local") / "out"
    res = extract(config([shards], out, features=("cls", "patches")))
    assert res.exit_code == 0
    return read_features(out, "cls")


def test_folder_nested_rows_keys_and_direct_equality(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    files = {"a/x1.jpg": img.make_jpeg(120, 90, 1), "a/b/x2.PNG": img.make_png(64, 80, 2),
             "c/x3.webp": img.make_webp(100, 100, 3), "top.JPEG": img.make_jpeg(300, 200, 4),
             "notes.txt": b"not an image, not picked up"}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    res = extract(config([root], tmp_path / "out", shard_size=3))
    assert res.exit_code == 0 and res.images == 4 and res.failures == 0
    keys, cls = read_features(tmp_path / "out", "cls")
    assert keys == ["a/b/x2.PNG", "a/x1.jpg", "c/x3.webp", "top.JPEG"]
    ref = direct_cls([files[k] for k in keys])
    assert np.abs(cls - ref).max() <= 1e-5
    layout = OutputLayout(tmp_path / "out")
    assert len(done_units(layout)) == 2          # shard size 3 -> two units
    # the timings nest: setup + model load > streaming > steady (first model batch on)
    assert 0 < res.steady_seconds < res.loop_seconds < res.seconds
    assert res.steady_seconds <= res.loop_seconds - res.first_batch_seconds
    assert f"{4 / res.steady_seconds:.1f} img/s from it on" in res.summary


def test_webdataset_local_shards(shards: Path, local_run) -> None:
    keys, cls = local_run
    assert len(keys) == 15 and len(set(keys)) == 15
    assert keys[0] == "shard-000000/s00_00000" and keys[-1] == "shard-000002/s02_00004"
    raw = {}
    import webdataset as wds
    for tar in sorted(shards.glob("*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False):
            data = next(s[e] for e in ("jpg", "png", "webp") if e in s)
            raw[f"{tar.stem}/{s['__key__']}"] = data
    ref = direct_cls([raw[k] for k in keys])
    assert np.abs(cls - ref).max() <= 1e-5


def test_same_shards_from_s3_http_and_pipe(shards: Path, local_run, tmp_path: Path) -> None:
    keys, cls = local_run
    runs = {}
    with s3_server(tmp_path / "s3") as (endpoint, key, secret):
        upload_folder(endpoint, "bucket", "data/", shards)
        env_keys = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                    "AWS_DEFAULT_REGION": "us-east-1"}
        import os
        old = {k: os.environ.get(k) for k in env_keys}
        os.environ.update(env_keys)
        try:
            res = extract(config(["s3://bucket/data/"], tmp_path / "s3out", s3=endpoint))
        finally:
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        assert res.exit_code == 0
        runs["s3"] = read_features(tmp_path / "s3out", "cls")
    with http_server(shards) as base:
        url = base + "/shard-{000000..000002}.tar"
        assert extract(config([url], tmp_path / "httpout")).exit_code == 0
        runs["http"] = read_features(tmp_path / "httpout", "cls")
    pipe = "pipe:cat " + str(shards) + "/shard-{000000..000002}.tar"
    assert extract(config([pipe], tmp_path / "pipeout")).exit_code == 0
    runs["pipe"] = read_features(tmp_path / "pipeout", "cls")
    for name, (k, x) in runs.items():
        assert k == keys, name
        assert np.abs(x - cls).max() <= 1e-6, name


def test_parquet_with_image_bytes(tmp_path: Path) -> None:
    images = [img.make_jpeg(80 + i, 60, i) for i in range(5)] + [None, b"garbage"]
    pq_path = img.write_parquet(tmp_path / "in" / "data.parquet", images,
                                keys=[f"k{i}" for i in range(7)])
    res = extract(config([pq_path], tmp_path / "out", shard_size=4))
    assert res.exit_code == 0
    keys, cls = read_features(tmp_path / "out")
    assert len(keys) == 5 and res.failures == 2
    ref = direct_cls(images[:5])
    assert np.abs(cls - ref).max() <= 1e-5


def test_broken_inputs_land_in_the_ledger(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    good = {f"good{i}.jpg": img.make_jpeg(90, 70, i) for i in range(3)}
    special = img.broken_and_special()
    for name, data in {**good, **special}.items():
        (root / name).write_bytes(data)
    res = extract(config([root], tmp_path / "out"))
    assert res.exit_code == 0
    layout = OutputLayout(tmp_path / "out")
    rec = next(iter(done_units(layout).values()))
    broken = {n for n, (_, _) in img.BROKEN.items()}
    assert rec.failed == len(broken)
    assert rec.rows + rec.failed == len(good) + len(special)
    ledger = [json.loads(line) for line in (tmp_path / "out" / rec.ledger.path).read_text().splitlines()]
    assert {e["key"] for e in ledger} == broken
    expected_types = {n: t for n, (_, t) in img.BROKEN.items()}
    for e in ledger:
        assert e["error_type"] == expected_types[e["key"]], e
        assert e["message"]
    keys, _ = read_features(tmp_path / "out")
    assert set(keys) == set(good) | (set(special) - broken)


def test_npy_format_with_embedding_reader(shards: Path, local_run, tmp_path: Path) -> None:
    keys, cls = local_run
    out = tmp_path / "npy"
    assert extract(config([shards], out, fmt="npy", features=("cls", "patches"))).exit_code == 0
    k2, x2 = read_features(out, "cls")
    assert k2 == keys and np.abs(x2 - cls).max() == 0
    _, patches = read_features(out, "patches")
    assert patches.shape == (15, 16, 64)
    er = pytest.importorskip("embedding_reader")
    reader = er.EmbeddingReader(str(out / "cls"), file_format="parquet_npy",
                                metadata_folder=str(out / "metadata"), meta_columns=["key"])
    got_keys, got = [], []
    for emb, meta in reader(batch_size=100, start=0, end=reader.count, parallel_pieces=1,
                            show_progress=False):
        got.append(emb)
        got_keys += list(meta["key"])
    assert got_keys == keys
    assert np.abs(np.concatenate(got) - cls).max() == 0


def test_parquet_file_is_self_describing(local_run, shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    assert extract(config([shards], out, features=("cls", "layers:2", "patch_grid:2"),
                          keep_json=True)).exit_code == 0
    part = sorted(out.glob("part-*.parquet"))[0]
    table = pq.read_table(part)
    assert table.column_names[:2] == ["key", "source"]
    sidecar = json.loads(table.column("json")[1].as_py())      # --keep-json: the .json sidecar
    assert sidecar == {"caption": "photo 0/1", "n": 1}
    meta = json.loads(table.schema.metadata[b"webssl"])
    assert "model" in json.dumps(meta) and "resize-crop" in json.dumps(meta)
    _, layers = read_features(out, "layers:2")
    _, grid = read_features(out, "patch_grid:2")
    assert layers.shape == (15, 2, 64) and grid.shape == (15, 4, 64)


def test_empty_input_is_exit_2_before_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = cli_here(cli_args([tmp_path / "empty"], tmp_path / "out"))
    assert r.returncode == 2, r.stderr
    assert "empty" in r.stderr.lower() and str(tmp_path / "empty") in r.stderr
    r = cli_here(cli_args([tmp_path / "missing"], tmp_path / "out"))
    assert r.returncode == 2 and "missing" in r.stderr


def test_resolution_not_multiple_of_patch_is_exit_2(tmp_path: Path) -> None:
    args = cli_args([tmp_path], tmp_path / "out")
    args[args.index("--resolution") + 1] = "60"
    r = cli_here(args)
    assert r.returncode == 2 and "multiple of the patch size 14" in r.stderr


def test_fingerprint_change_refused_then_overwrite(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # the console script as a real process once in this file; in-process runs below
    assert run_cli(cli_args([shards], out, "--batch-size", "auto")).returncode == 0
    r = cli_here(cli_args([shards], out, "--normalize"))
    assert r.returncode == 2 and "normalize: false -> true" in r.stderr
    r = cli_here(cli_args([shards], out, "--normalize", "--overwrite"))
    assert r.returncode == 0, r.stderr
    _, x = read_features(out)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_truncated_shard_is_incomplete_exit_3_then_repaired(shards: Path, tmp_path: Path) -> None:
    d = tmp_path / "sh"
    shutil.copytree(shards, d)
    victim = d / "shard-000001.tar"
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2 + 7])
    r = cli_here(cli_args([d], tmp_path / "out"))
    assert r.returncode == 3, r.stderr
    assert "shard-000001" in r.stderr and "could not be completed" in r.stderr
    st = get_status(tmp_path / "out")
    assert st.to_dict()["units_done"] == 2
    victim.write_bytes(good)              # repaired: the rerun finishes the missing unit only
    r = cli_here(cli_args([d], tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    keys, _ = read_features(tmp_path / "out")
    assert len(keys) == 15


def test_files_added_later_never_reshuffle_finished_units(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(4):
        (root / f"p{i}.jpg").write_bytes(img.make_jpeg(70 + i, 60, i))
    out = tmp_path / "out"
    assert extract(config([root], out, shard_size=2)).exit_code == 0
    plan_before = (out / "_webssl" / "plan.json").read_bytes()
    keys_before, x_before = read_features(out)
    (root / "a_new_first.jpg").write_bytes(img.make_jpeg(90, 90, 9))   # sorts first
    res = extract(config([root], out, shard_size=2))
    assert res.exit_code == 0 and res.images == 0                     # nothing redone
    assert (out / "_webssl" / "plan.json").read_bytes() == plan_before
    keys, x = read_features(out)
    assert keys == keys_before == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg"]
    assert np.array_equal(x, x_before)


def test_jpeg_draft_is_recorded_refused_on_a_mixed_output_and_close_to_exact(tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    for i in range(4):
        (root / f"{i}.jpg").write_bytes(img.make_jpeg(900 + 100 * i, 700, i))
    exact, draft = tmp_path / "exact", tmp_path / "draft"
    assert cli_here(cli_args([root], exact)).returncode == 0
    r = cli_here(cli_args([root], exact, "--jpeg-draft"))
    assert r.returncode == 2 and "jpeg_draft" in r.stderr        # not mixed into a finished run
    r = cli_here(cli_args([root], draft, "--jpeg-draft"))
    assert r.returncode == 0, r.stderr
    meta = json.loads(pq.read_table(sorted(draft.glob("part-*.parquet"))[0]).schema.metadata[b"webssl"])
    assert "DCT" in json.dumps(meta)
    (k1, a), (k2, b) = read_features(exact), read_features(draft)
    assert k1 == k2 and not np.array_equal(a, b)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.98     # tiny random model at 56 px: pixel fidelity is tested in test_preprocess
