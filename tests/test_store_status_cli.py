"""`webssl status OUT` through the real console script."""
from __future__ import annotations

import json
import subprocess

import numpy as np

from tests.helpers.cli import WEBSSL
from webssl_cli.store import (ClaimStore, DoneRecord, OutputLayout, UnitRows, check_run_config,
                              commit_unit, save_or_load_plan, write_failures, write_unit)
from webssl_cli.units import Failure, Unit

FIELDS = {"model": "webssl/dino-tiny", "resolution": 224, "features": ["cls"],
          "format": "parquet", "out_dtype": "float16"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([WEBSSL, "status", *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def _folder(tmp_path) -> OutputLayout:
    layout = OutputLayout(tmp_path / "out")
    cfg = check_run_config(layout, FIELDS, overwrite=False)
    units = save_or_load_plan(layout, lambda: [Unit(index=i, kind="tar", source=f"/d/{i}.tar",
                                                    name=f"shard-{i:06d}") for i in range(4)],
                              is_planner=True, wait_seconds=1)
    for u in units[:2]:
        rows = UnitRows(keys=[f"{u.name}/{i}" for i in range(3)], sources=[u.source] * 3,
                        features={"cls": np.zeros((3, 4), np.float16)})
        files = write_unit(layout, "parquet", u, rows, {"fingerprint": cfg.fingerprint})
        ledger = write_failures(layout, u, [Failure(f"{u.name}/x", u.source, "decode", "E", "bad")])
        assert commit_unit(layout, DoneRecord(u.id, u.name, u.source, 3, 1, files, ledger,
                                              "r0", 0.5))
    assert ClaimStore(layout, "gpu-node-3:4242:rank5", 300).claim_next(units, {"000000", "000001"})
    return layout


def test_status_json(tmp_path):
    layout = _folder(tmp_path)
    proc = _run(str(layout.out_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["units_done"], report["units_total"], report["rows"], report["failed_rows"]) == (2, 4, 6, 2)
    assert report["complete"] is False
    assert report["fields"] == FIELDS and len(report["fingerprint"]) == 64
    [claim] = report["claims"]
    assert claim["unit_id"] == "000002" and claim["owner"] == "gpu-node-3:4242:rank5"
    assert claim["stale"] is False and 0 <= claim["age_seconds"] < 300
    assert report["missing_files"] == [] and report["pending_commits"] == []

    layout.parquet_path("000001").unlink()
    report = json.loads(_run(str(layout.out_dir), "--json").stdout)
    assert report["missing_files"] == ["part-000001.parquet (missing)"]


def test_status_table(tmp_path):
    layout = _folder(tmp_path)
    proc = _run(str(layout.out_dir))
    assert proc.returncode == 0, proc.stderr
    for text in ("units done", "2 / 4", "failed rows", "2 in 2 units", "gpu-node-3:4242:rank5",
                 "000002", "resolution", "224"):
        assert text in proc.stdout, (text, proc.stdout)


def test_status_without_manifest_exits_2(tmp_path):
    proc = _run(str(tmp_path))
    assert proc.returncode == 2
    assert "no webssl manifest" in proc.stderr and str(tmp_path) in proc.stderr
    proc = _run(str(_folder(tmp_path).out_dir), "--manifest-name", "_other")
    assert proc.returncode == 2 and "_other" in proc.stderr
