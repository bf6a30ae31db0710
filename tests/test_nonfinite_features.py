"""Features with NaN or inf are never written: each such image is a NonFiniteFeatures row of
the failure ledger, and every other row of the same batch is written as usual. Real runs of
the fixture model whose final norm is scaled so that about half the CLS values pass
float16's range (65504)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from tests.extract_helpers import WEIGHTS, config
from tests.helpers import images as img
from webssl_cli import extract, read_features
from webssl_cli.store import OutputLayout, done_units

F16_INF = 65520.0     # float16 rounds values from here up to inf


def _weights(path: Path, scale: float) -> Path:
    """The fixture weights with the final norm's first channel set to ``scale``, bias 0:
    CLS channel 0 is then ``scale`` times the normalized value."""
    sd = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    sd["norm.weight"] = sd["norm.weight"].clone()
    sd["norm.bias"] = sd["norm.bias"].clone()
    sd["norm.weight"][0], sd["norm.bias"][0] = scale, 0.0
    torch.save(sd, path)
    return path


def _run(folder: Path, out: Path, weights: Path, out_dtype: str, batch: int = 5,
         feature_memory: int | None = None):
    cfg = config([folder], out, out_dtype=out_dtype, workers=0, batch=batch)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=str(weights)),
                              runtime=dataclasses.replace(cfg.runtime,
                                                          feature_memory_mib=feature_memory))
    return extract(cfg)


def test_rows_past_float16_become_ledger_rows_the_rest_are_written(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        (folder / f"{i:02d}.jpg").write_bytes(img.make_jpeg(64 + 3 * i, 60, seed=i))
    unit_w = _weights(tmp_path / "unit.pth", 1.0)
    assert _run(folder, tmp_path / "f32", unit_w, "float32").exit_code == 0
    keys, base = read_features(tmp_path / "f32", "cls")
    normalized = np.abs(base[:, 0].astype(np.float64))
    scale = F16_INF / float(np.median(normalized))

    big_w = _weights(tmp_path / "big.pth", scale)
    res = _run(folder, tmp_path / "f16", big_w, "float16")
    assert res.exit_code == 0                  # bad images are failures, not a failed run
    over = {k for k, v in zip(keys, normalized * scale) if v > F16_INF * 1.01}
    under = {k for k, v in zip(keys, normalized * scale) if v < F16_INF * 0.99}
    assert over and under

    rec = next(iter(done_units(OutputLayout(tmp_path / "f16")).values()))
    ledger = [json.loads(x) for x in (tmp_path / "f16" / rec.ledger.path).read_text().splitlines()]
    failed = {e["key"] for e in ledger}
    assert over <= failed and not (under & failed)
    assert rec.rows + rec.failed == 12 and rec.failed == len(ledger) == res.failures
    for e in ledger:
        assert (e["stage"], e["error_type"]) == ("model", "NonFiniteFeatures")
        assert "NaN or inf in cls" in e["message"] and "--out-dtype float32" in e["message"]

    kept, feats = read_features(tmp_path / "f16", "cls")
    assert set(kept) == set(keys) - failed and np.isfinite(feats).all()
    assert_rows_unchanged(kept, feats, tmp_path, folder, big_w)

    # batches of one, every batch spilled: a batch whose only row was flagged leaves its
    # unit an empty piece of rows, which the spool takes too (it crashed the run once)
    res = _run(folder, tmp_path / "spilled", big_w, "float16", batch=1, feature_memory=0)
    assert res.exit_code == 0 and res.failures == len(failed) and res.spilled_bytes > 0
    again, feats_again = read_features(tmp_path / "spilled", "cls")
    assert again == kept
    np.testing.assert_array_equal(feats_again, feats)


def assert_rows_unchanged(kept, feats, tmp_path: Path, folder: Path, weights: Path) -> None:
    """The written rows are the float32 features cast, in the same order as a float32 run."""
    assert _run(folder, tmp_path / "big32", weights, "float32").exit_code == 0
    keys32, f32 = read_features(tmp_path / "big32", "cls")
    pos = {k: i for i, k in enumerate(keys32)}
    assert kept == [k for k in keys32 if k in set(kept)]
    want = f32[[pos[k] for k in kept]].astype(np.float16)
    np.testing.assert_array_equal(feats, want)
