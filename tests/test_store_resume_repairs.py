"""Resuming an output folder: damaged finished units are redone, input spellings resume,
other settings on a non-planner are final, new inputs are reported, manifest names cannot
collide with data, stale temp files are swept, and a bad --out is a usage error."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from tests.extract_helpers import cli_args
from tests.helpers.cli import cli_here
from tests.helpers.images import make_jpeg
from webssl_cli.errors import UsageError, WebsslError
from webssl_cli.store import (DoneRecord, OutputLayout, UnitRows, check_run_config, commit_unit,
                              get_status, load_plan, read_done_records, read_features,
                              reopen_damaged_units, save_or_load_plan, sweep_temp_files,
                              write_unit)
from webssl_cli.store.claims import hold_unit
from webssl_cli.units import Unit

FIELDS = {"model": "webssl/dino-tiny", "resolution": 224, "features": ["cls"],
          "format": "parquet", "out_dtype": "float16"}


def _images(folder, n: int, start: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (folder / f"img{i:03d}.jpg").write_bytes(make_jpeg(64, 48, seed=i))
    return folder


def _units(n: int, root: str = "/d") -> list[Unit]:
    return [Unit(index=i, kind="tar", source=f"{root}/s-{i}.tar", name=f"s-{i:06d}")
            for i in range(n)]


def _folder(tmp_path, n_units: int = 3, fields=FIELDS) -> OutputLayout:
    layout = OutputLayout(tmp_path / "out")
    check_run_config(layout, fields, overwrite=False)
    inputs = tmp_path / "d"            # the units' inputs exist, so damaged units can be redone
    inputs.mkdir()
    units = _units(n_units, str(inputs))
    for u in units:
        open(u.source, "wb").close()
    units = save_or_load_plan(layout, lambda: units, is_planner=True, wait_seconds=1)
    for u in units:
        rows = UnitRows(keys=[f"{u.name}/{i}" for i in range(2)], sources=[u.source] * 2,
                        features={"cls": np.ones((2, 4), np.float16)})
        files = write_unit(layout, "parquet", u, rows, {})
        assert commit_unit(layout, DoneRecord(u.id, u.name, u.source, 2, 0, files, None, "r0", 0.1))
    return layout


# -- 1. a deleted data file of a finished unit ---------------------------------------------

def test_deleted_file_is_reported_read_back_fails_clearly_and_a_rerun_redoes_it(tmp_path):
    images = _images(tmp_path / "in", 6)
    out = tmp_path / "out"
    r = cli_here(cli_args([images], out, "--shard-size", "2", "--num-workers", "1"))
    assert r.returncode == 0, r.stderr
    _, before = read_features(out)
    (out / "part-000001.parquet").unlink()
    stale = out / "_webssl" / "done" / ".000010.json.3519-5e9d0b96.tmp"   # left by a SIGKILL
    stale.write_text("{")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    r = cli_here(["status", out, "--json"])
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["complete"] is False and report["damaged_units"] == ["000001"]
    assert report["missing_files"] == ["part-000001.parquet (missing)"]
    assert "000001" in report["repair"] and "rerun" in report["repair"]
    text = cli_here(["status", out])
    assert "(complete)" not in text.stdout and report["repair"] in text.stderr

    with pytest.raises(WebsslError) as info:
        read_features(out)
    msg = str(info.value)
    assert "unit 000001" in msg and str(out / "part-000001.parquet") in msg and "rerun" in msg

    r = cli_here(cli_args([images], out, "--shard-size", "2", "--num-workers", "1"))
    assert r.returncode == 0, r.stderr
    assert "unit 000001" in r.stderr and "part-000001.parquet (missing)" in r.stderr
    assert (out / "part-000001.parquet").is_file() and not stale.exists()
    assert get_status(out).complete
    _, after = read_features(out)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_a_changed_file_is_damage_too_and_reopening_is_idempotent(tmp_path):
    layout = _folder(tmp_path)
    with open(layout.parquet_path("000002"), "ab") as f:
        f.write(b"junk")
    assert get_status(layout.out_dir).damaged_units == ["000002"]
    said: list[str] = []
    assert reopen_damaged_units(layout, said.append) == ["000002"]
    assert "000002" in said[0] and "part-000002.parquet" in said[0]
    assert sorted(read_done_records(layout)) == ["000000", "000001"]
    assert not layout.commit_path("000002").exists() and not layout.parquet_path("000002").exists()
    report = get_status(layout.out_dir)
    assert report.missing_files == [] and not report.complete and report.units_done == 2
    assert reopen_damaged_units(layout, said.append) == [] and len(said) == 1


def test_a_unit_held_by_another_process_is_not_reopened_under_it(tmp_path):
    layout = _folder(tmp_path)
    layout.parquet_path("000000").unlink()
    with hold_unit(layout, "000000", "someone-else") as held:
        assert held
        assert reopen_damaged_units(layout, lambda m: None) == []
        assert "000000" in read_done_records(layout)
    assert reopen_damaged_units(layout, lambda m: None) == ["000000"]


def test_a_unit_whose_input_is_gone_is_not_reopened(tmp_path):
    """Redoing it would fail and lose its remaining files for nothing."""
    layout = _folder(tmp_path)
    layout.parquet_path("000001").unlink()
    os.unlink(tmp_path / "d" / "s-1.tar")
    said: list[str] = []
    assert reopen_damaged_units(layout, said.append) == []
    assert "s-1.tar no longer exists" in said[0]
    assert "000001" in read_done_records(layout)
    assert get_status(layout.out_dir).damaged_units == ["000001"]


def _bad_and_good(tmp_path):
    folder = _images(tmp_path / "in", 2)
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


def test_a_lost_failure_ledger_is_reported_but_never_costs_features(tmp_path):
    images = _bad_and_good(tmp_path)
    out = tmp_path / "out"
    args = cli_args([images], out, "--num-workers", "0")
    assert cli_here(args).returncode == 0
    part = out / "part-000000.parquet"
    before = part.read_bytes()
    for f in (out / "_webssl" / "failures").iterdir():
        f.unlink()
    report = get_status(out)
    assert report.complete and report.damaged_units == []
    assert report.missing_files == ["_webssl/failures/000000.jsonl (missing)"]
    r = cli_here(args)
    assert r.returncode == 0, r.stderr
    assert "redone by this run" not in r.stderr and part.read_bytes() == before


def test_plan_only_run_changes_no_data_and_a_lost_input_makes_exit_3(tmp_path):
    images = _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    args = cli_args([images], out, "--num-workers", "0", "--features", "cls,patch_mean",
                    "--format", "npy")
    assert cli_here(args).returncode == 0
    (out / "cls" / "000000.npy").unlink()
    r = cli_here(args + ["--limit-units", "0"])            # reports the damage, repairs nothing
    assert r.returncode == 3 and "redone by this run" not in r.stderr, r.stderr
    assert "(1 unit, 1 done); no unit was run" in r.stderr       # no model, no workers
    assert (out / "patch_mean" / "000000.npy").exists()
    images.rename(tmp_path / "moved")                   # the input is gone now
    r = cli_here(args)
    assert r.returncode == 3, r.stderr
    assert "no longer exists" in r.stderr and "not redone" in r.stderr
    assert (out / "patch_mean" / "000000.npy").exists()   # the other feature is kept


def test_keep_json_and_key_column_are_settings(tmp_path):
    import io
    import tarfile
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("a.jpg", make_jpeg(40, 40)), ("a.json", b'{"x": 1}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    assert cli_here(cli_args([shard], out, "--keep-json", "--num-workers", "0")).returncode == 0
    r = cli_here(cli_args([shard], out, "--num-workers", "0"))
    assert r.returncode == 2 and "keep_json: true -> false" in r.stderr


# -- 2. inputs spelled differently -----------------------------------------------------------

def test_other_spellings_of_the_same_input_resume(tmp_path, monkeypatch):
    images = _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    assert cli_here(cli_args(["in"], out, "--num-workers", "1")).returncode == 0
    for spelling in ("in/", "./in", str(images), str(images) + "/"):
        r = cli_here(cli_args([spelling], out, "--num-workers", "1"))
        assert r.returncode == 0, (spelling, r.stderr)


def test_an_older_run_config_with_a_relative_input_still_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    layout = OutputLayout(tmp_path / "out")
    check_run_config(layout, {**FIELDS, "inputs": ["shards/"]}, overwrite=False)   # as stored before
    check_run_config(layout, {**FIELDS, "inputs": [str(tmp_path / "shards")]}, overwrite=False)


def test_refusal_for_other_inputs_warns_that_overwrite_discards_finished_units(tmp_path):
    layout = _folder(tmp_path, fields={**FIELDS, "inputs": ["/data/a"]})
    with pytest.raises(UsageError) as info:
        check_run_config(layout, {**FIELDS, "inputs": ["/data/b"]}, overwrite=False)
    msg = str(info.value)
    assert 'inputs: ["/data/a"] -> ["/data/b"]' in msg
    assert "another --out" in msg and "would discard the 3 finished units" in msg


# -- 3. a non-planner with other settings ------------------------------------------------------

def test_non_planner_with_other_settings_is_refused_at_once(tmp_path):
    layout = _folder(tmp_path, 1)
    with pytest.raises(UsageError) as info:      # not after the wait: it would time out instead
        save_or_load_plan(layout, lambda: [], is_planner=False, wait_seconds=30,
                          fields={**FIELDS, "resolution": 448})
    assert "resolution: 224 -> 448" in str(info.value) and "--overwrite" in str(info.value)


def test_non_planner_with_overwrite_waits_says_so_once_and_times_out_cause_first(tmp_path):
    layout = _folder(tmp_path, 1)
    said: list[str] = []
    with pytest.raises(WebsslError) as info:
        save_or_load_plan(layout, lambda: [], is_planner=False, wait_seconds=0.5,
                          fields={**FIELDS, "resolution": 448}, overwrite=True, say=said.append)
    assert not isinstance(info.value, UsageError)
    msg = str(info.value)
    assert msg.startswith("The run config has other settings") and "224 -> 448" in msg
    assert "timed out after 0.5 s" in msg
    assert len(said) == 1 and "--overwrite" in said[0] and "224 -> 448" in said[0]


# -- 4. inputs added after the first run --------------------------------------------------------

def test_new_input_files_are_reported_and_the_plan_kept(tmp_path):
    images = _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert cli_here(cli_args([images], out, "--num-workers", "1")).returncode == 0
    plan = load_plan(OutputLayout(out))
    _images(images, 3, start=10)
    r = cli_here(cli_args([images], out, "--num-workers", "1"))
    assert r.returncode == 0, r.stderr
    assert "3 image files" in r.stderr and "img010.jpg" in r.stderr and "new --out" in r.stderr
    assert load_plan(OutputLayout(out)) == plan


def test_new_shards_and_rows_are_counted(tmp_path):
    layout = _folder(tmp_path, 2)
    said: list[str] = []
    save_or_load_plan(layout, lambda: [], is_planner=True, wait_seconds=1,
                      recheck=lambda: _units(2, str(tmp_path / "d")), say=said.append)
    assert said == []
    more = _units(5, str(tmp_path / "d")) + [Unit(5, "parquet", "/d/t.parquet", "t-000000", row_range=(0, 7))]
    save_or_load_plan(layout, lambda: [], is_planner=True, wait_seconds=1,
                      recheck=lambda: more, say=said.append)
    assert len(said) == 1 and "3 tar shards" in said[0] and "7 parquet rows in 1 file" in said[0]
    assert len(load_plan(layout)) == 2


# -- 5. manifest names -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["part-000000.parquet", "part-x", "metadata", "cls", "patch_mean",
                                  "patches", "layers_4", "patch_grid_2", "CLS"])
def test_manifest_name_colliding_with_data_is_refused(tmp_path, name):
    with pytest.raises(UsageError, match="collide"):
        OutputLayout(tmp_path, name)


def test_manifest_name_collision_exits_2(tmp_path):
    images = _images(tmp_path / "in", 1)
    r = cli_here(cli_args([images], tmp_path / "out", "--manifest-name", "metadata",
                          "--format", "npy"))
    assert r.returncode == 2 and "metadata" in r.stderr and "collide" in r.stderr
    assert not (tmp_path / "out" / "metadata").exists()
    OutputLayout(tmp_path, "_my.manifest-1")            # ordinary names still work


def test_a_new_manifest_name_must_be_hidden_from_dataset_readers(tmp_path):
    """pyarrow skips only _ and . names: a manifest called "mf" would break ds.dataset(OUT)."""
    import pyarrow.dataset as ds
    images = _images(tmp_path / "in", 2)
    r = cli_here(cli_args([images], tmp_path / "out", "--manifest-name", "mf"))
    assert r.returncode == 2 and "--manifest-name mf" in r.stderr and "_mf" in r.stderr
    assert not (tmp_path / "out" / "mf").exists()
    r = cli_here(cli_args([images], tmp_path / "out", "--manifest-name", "_mf"))
    assert r.returncode == 0, r.stderr
    assert ds.dataset(tmp_path / "out", format="parquet").to_table().num_rows == 2


# -- 6. stale temp files -------------------------------------------------------------------------

def test_stale_temp_files_are_swept_fresh_ones_kept_and_both_ignored(tmp_path):
    layout = _folder(tmp_path, 1)
    old = layout.done_dir / ".000010.json.3519-5e9d0b96.tmp"
    fresh = layout.commits_dir / ".000011.json.3519-5e9d0b97.tmp"
    claim = layout.claims_dir / ".000012.000000.json.1-00000000.tmp"
    for p in (old, fresh, claim):
        p.write_text('{"unit_id": "x"')
    for p in (old, claim):
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    report = get_status(layout.out_dir)
    assert report.units_done == 1 and report.pending_commits == [] and report.claims == []
    removed = sweep_temp_files(layout)
    assert sorted(removed) == sorted([layout.rel(old), layout.rel(claim)])
    assert fresh.exists() and not old.exists() and not claim.exists()


# -- 7. --out that cannot be an output folder ------------------------------------------------------

def test_out_that_is_a_file_is_a_usage_error(tmp_path):
    images = _images(tmp_path / "in", 1)
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "sub"):
        r = cli_here(cli_args([images], out))
        assert r.returncode == 2, r.stderr
        assert str(out) in r.stderr and "is an existing file, not a folder" in r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_out_is_a_usage_error(tmp_path):
    images = _images(tmp_path / "in", 1)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = cli_here(cli_args([images], ro / "out"))
    finally:
        ro.chmod(0o755)
    assert r.returncode == 2, r.stderr
    assert str(ro / "out") in r.stderr and "writable" in r.stderr and "Traceback" not in r.stderr


def test_read_only_out_error_from_the_store(tmp_path):
    """The same check without needing a non-root user: the manifest name is taken by a file."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "_webssl").write_text("not a folder")
    with pytest.raises(UsageError) as info:
        check_run_config(OutputLayout(tmp_path / "out"), FIELDS, overwrite=False)
    assert str(tmp_path / "out") in str(info.value) and "writable" in str(info.value)
