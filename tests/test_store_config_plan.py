"""Run config fingerprint (refusal with the diff, --overwrite) and the plan (once, waited for)."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pytest

from webssl_cli.errors import EXIT_USAGE, UsageError, WebsslError
from webssl_cli.store import (DoneRecord, OutputLayout, UnitRows, check_run_config, commit_unit,
                              done_units, fingerprint, load_plan, save_or_load_plan, write_unit)
from webssl_cli.units import Unit

FIELDS = {"model": "webssl/dino-tiny", "weights_sha256": "ab" * 32,
          "preprocess": {"mode": "resize-crop", "resize_short": 256, "crop": "center"},
          "resolution": 224, "precision": "bf16", "features": ["cls"], "normalize": False,
          "format": "parquet", "out_dtype": "float16", "tool_version": "0.1.0"}


def _units(n: int, tag: str = "shard") -> list[Unit]:
    return [Unit(index=i, kind="tar", source=f"/d/{tag}-{i}.tar", name=f"{tag}-{i:06d}")
            for i in range(n)]


def _commit(layout, unit):
    rows = UnitRows(keys=[f"{unit.name}/0"], sources=[unit.source],
                    features={"cls": np.ones((1, 4), np.float16)})
    files = write_unit(layout, "parquet", unit, rows, {})
    assert commit_unit(layout, DoneRecord(unit.id, unit.name, unit.source, 1, 0, files, None,
                                          "r0", 0.0))


def test_fingerprint_is_canonical():
    assert fingerprint({"a": (1, 2), "b": None}) == fingerprint({"b": None, "a": [1, 2]})
    assert fingerprint(FIELDS) != fingerprint({**FIELDS, "resolution": 448})


def test_same_fields_accepted_different_refused_with_diff(tmp_path):
    layout = OutputLayout(tmp_path / "out")
    first = check_run_config(layout, FIELDS, overwrite=False)
    saved = json.loads(layout.run_config_path.read_text())
    assert saved["fingerprint"] == first.fingerprint == fingerprint(FIELDS)
    assert saved["fields"] == FIELDS and saved["created"]
    assert check_run_config(layout, dict(FIELDS), overwrite=False).fingerprint == first.fingerprint

    changed = {**FIELDS, "resolution": 448, "features": ["cls", "patch_mean"], "extra": 1,
               "preprocess": {**FIELDS["preprocess"], "resize_short": 512}}
    changed.pop("normalize")
    with pytest.raises(UsageError) as info:
        check_run_config(layout, changed, overwrite=False)
    msg = str(info.value)
    assert info.value.exit_code == EXIT_USAGE
    assert "resolution: 224 -> 448" in msg
    assert 'features: ["cls"] -> ["cls", "patch_mean"]' in msg
    assert "preprocess.resize_short: 256 -> 512" in msg and "center" not in msg
    assert "normalize: false -> (absent)" in msg and "extra: (absent) -> 1" in msg
    assert "model" not in msg.split("differ")[1]            # only differing fields listed
    assert "--overwrite" in msg and "--out" in msg
    assert json.loads(layout.run_config_path.read_text())["fingerprint"] == first.fingerprint


def test_overwrite_discards_outputs_and_plan_keeps_foreign_files(tmp_path):
    layout = OutputLayout(tmp_path / "out")
    check_run_config(layout, FIELDS, overwrite=False)
    units = save_or_load_plan(layout, lambda: _units(3), is_planner=True, wait_seconds=1)
    for u in units[:2]:
        _commit(layout, u)
    (layout.out_dir / "notes.txt").write_text("mine")
    # same fingerprint + overwrite: nothing is discarded (a rerun resumes)
    check_run_config(layout, FIELDS, overwrite=True)
    assert len(done_units(layout)) == 2

    new = {**FIELDS, "resolution": 448}
    cfg = check_run_config(layout, new, overwrite=True)
    assert cfg.fingerprint == fingerprint(new)
    assert sorted(p.name for p in layout.out_dir.iterdir()) == ["_webssl", "notes.txt"]
    assert sorted(p.name for p in layout.manifest_dir.iterdir()) == [
        "claims", "commits", "done", "failures", "run.json", "staging"]
    assert done_units(layout) == {} and load_plan(layout) is None
    units = save_or_load_plan(layout, lambda: _units(5, "new"), is_planner=True, wait_seconds=1)
    assert [u.name for u in units][:1] == ["new-000000"]
    assert json.loads(layout.plan_path.read_text())["run_id"] == cfg.run_id


def test_plan_is_reused_not_remade(tmp_path):
    layout = OutputLayout(tmp_path / "out")
    first = save_or_load_plan(layout, lambda: _units(3), is_planner=True, wait_seconds=1)
    again = save_or_load_plan(layout, lambda: _units(9, "added"), is_planner=True, wait_seconds=1)
    assert again == first and len(again) == 3


def test_plan_indexes_must_match_positions(tmp_path):
    bad = [Unit(index=1, kind="tar", source="a", name="a")]
    with pytest.raises(ValueError, match="index 1 at position 0"):
        save_or_load_plan(OutputLayout(tmp_path), lambda: bad, is_planner=True, wait_seconds=1)


def test_non_planner_timeout_says_what_it_waited_for(tmp_path):
    layout = OutputLayout(tmp_path / "out")
    with pytest.raises(WebsslError) as info:
        save_or_load_plan(layout, lambda: pytest.fail("non-planner must not plan"),
                          is_planner=False, wait_seconds=0.3)
    msg = str(info.value)
    assert str(layout.plan_path) in msg and "timed out after 0.3 s" in msg
    assert "planner" in msg and "same --out" in msg and "plan wait" in msg


def test_non_planner_with_fields_waits_for_matching_run_config(tmp_path):
    layout = OutputLayout(tmp_path / "out")
    check_run_config(layout, FIELDS, overwrite=False)
    save_or_load_plan(layout, lambda: _units(2), is_planner=True, wait_seconds=1)
    got = save_or_load_plan(layout, lambda: [], is_planner=False, wait_seconds=1, fields=FIELDS)
    assert len(got) == 2
    with pytest.raises(WebsslError, match=r"resolution: 224 -> 448"):
        save_or_load_plan(layout, lambda: [], is_planner=False, wait_seconds=0.2,
                          fields={**FIELDS, "resolution": 448})


# -- several processes ---------------------------------------------------------------------

def _planner(out: str, tag: str, barrier, results) -> None:
    layout = OutputLayout(out)
    barrier.wait()

    def make():
        time.sleep(0.2)                  # widen the race: everyone plans at the same time
        return _units(4, tag)
    units = save_or_load_plan(layout, make, is_planner=True, wait_seconds=10)
    results.put((tag, [u.name for u in units]))


def _waiter(out: str, results) -> None:
    results.put(("started", os.getpid()))
    units = save_or_load_plan(OutputLayout(out), lambda: [], is_planner=False, wait_seconds=60)
    results.put(("waiter", [u.name for u in units]))


def test_racing_planners_all_get_the_single_winning_plan(tmp_path):
    ctx = mp.get_context("spawn")
    out = str(tmp_path / "out")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_planner, args=(out, f"p{i}", barrier, results)) for i in range(3)]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    saved = [u.name for u in load_plan(OutputLayout(out))]
    assert all(names == saved for names in got.values())
    assert len({n.split("-")[0] for n in saved}) == 1


def test_non_planner_waits_until_the_plan_appears(tmp_path):
    ctx = mp.get_context("spawn")
    out = str(tmp_path / "out")
    results = ctx.Queue()
    proc = ctx.Process(target=_waiter, args=(out, results))
    proc.start()
    assert results.get(timeout=60)[0] == "started"
    time.sleep(0.5)
    save_or_load_plan(OutputLayout(out), lambda: _units(3), is_planner=True, wait_seconds=1)
    assert results.get(timeout=60) == ("waiter", [u.name for u in _units(3)])
    proc.join(30)
    assert proc.exitcode == 0


def test_unreadable_run_config_named_and_overwrite_recovers(tmp_path):
    layout = OutputLayout(tmp_path / "out")
    check_run_config(layout, FIELDS, overwrite=False)
    layout.run_config_path.write_text("{not json")
    with pytest.raises(WebsslError, match="run.json is unreadable.*--overwrite"):
        check_run_config(layout, FIELDS, overwrite=False)
    cfg = check_run_config(layout, FIELDS, overwrite=True)
    assert json.loads(layout.run_config_path.read_text())["fingerprint"] == cfg.fingerprint


def test_a_run_whose_model_failed_to_load_leaves_no_settings_behind(tmp_path):
    """Weights that do not fit the model are found before the run writes anything (names and
    shapes), so the corrected command runs. Settings of a run that started no unit and may
    still be loading its model (here a plan-only run) are not replaced by themselves: the
    refusal says that nothing was extracted and how to replace them."""
    from tests.helpers.cli import cli_here
    fix = Path(__file__).resolve().parent / "fixtures" / "official"
    images = Path(__file__).resolve().parents[1] / "examples" / "images"
    out = tmp_path / "o"

    def run(spec: Path, *extra: str):
        return cli_here(["extract", "--model-config", str(spec), "--weights",
                         str(fix / "dino-tiny" / "official.pth"), "--resolution", "112",
                         "--device", "cpu", "--input", str(images), "--out", str(out),
                         "--num-workers", "0", *extra])

    bad = run(fix / "mae-tiny-p16" / "spec.json")          # dino weights, MAE architecture
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert not (out / "_webssl" / "run.json").exists()
    good = run(fix / "dino-tiny" / "spec.json")
    assert good.returncode == 0, good.stderr
    out = tmp_path / "o2"
    assert run(fix / "dino-tiny" / "spec.json", "--limit-units", "0",
               "--features", "patch_mean").returncode == 0
    refused = run(fix / "dino-tiny" / "spec.json")   # that run may still be loading: refused
    assert refused.returncode == 2
    assert "holds the settings of a run that started no unit" in refused.stderr
    assert "Nothing was extracted under them" in refused.stderr and "--overwrite" in refused.stderr
    good = run(fix / "dino-tiny" / "spec.json", "--overwrite")
    assert good.returncode == 0, good.stderr
