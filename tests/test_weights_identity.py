"""The run config records the weights' full sha256: two checkpoints of one size that differ
anywhere are two runs, never resumed into one output."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.extract_helpers import WEIGHTS, cli_args
from tests.helpers import images as img
from tests.helpers.cli import cli_here
from webssl_cli.checkpoints.identity import weights_sha256
from webssl_cli.store import OutputLayout, load_run_config


def _changed_late(dst: Path) -> Path:
    """The fixture checkpoint with one late tensor changed: same size, same first MiB."""
    sd = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    sd["norm.weight"] = sd["norm.weight"] * 2
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, dst)
    assert dst.stat().st_size == WEIGHTS.stat().st_size
    with open(dst, "rb") as a, open(WEIGHTS, "rb") as b:
        assert a.read(1 << 20) == b.read(1 << 20)
    return dst


def _photos(tmp_path: Path, n: int) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(n):
        (folder / f"p{i}.jpg").write_bytes(img.make_jpeg(40, 40, seed=i))
    return folder


def test_file_value_is_its_sha256_and_is_memoized(tmp_path: Path) -> None:
    f = tmp_path / "a" / WEIGHTS.name        # torch.save names the archive after the file
    f.parent.mkdir()
    shutil.copyfile(WEIGHTS, f)
    memo = tmp_path / "memo"
    expected = hashlib.sha256(f.read_bytes()).hexdigest()
    assert weights_sha256(f, memo) == expected                # `sha256sum w.pth` agrees
    (entry,) = memo.iterdir()
    assert json.loads(entry.read_text())["sha256"] == expected
    _changed_late(f)                                          # rewritten in place: new mtime
    assert weights_sha256(f, memo) == hashlib.sha256(f.read_bytes()).hexdigest() != expected


def test_folder_value_covers_every_weight_file(tmp_path: Path) -> None:
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"a" * 100)
    before = weights_sha256(d)
    (d / "model.safetensors").write_bytes(b"a" * 99 + b"b")
    assert weights_sha256(d) != before


def test_other_weights_of_the_same_size_are_refused(tmp_path: Path) -> None:
    photos = _photos(tmp_path, 2)
    out = tmp_path / "out"
    first = cli_here(cli_args([photos], out, "--shard-size", "1", "--limit-units", "1",
                              "--num-workers", "0"))
    assert first.returncode == 0, first.stderr
    recorded = load_run_config(OutputLayout(out)).fields["weights_sha256"]
    assert recorded == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()

    other = _changed_late(tmp_path / "w2" / WEIGHTS.name)
    args = cli_args([photos], out, "--shard-size", "1", "--num-workers", "0")
    args[args.index("--weights") + 1] = str(other)
    r = cli_here(args)
    assert r.returncode == 2, r.stderr
    assert "weights_sha256" in r.stderr


@pytest.mark.parametrize("field", ["weights_sha256", "position_embedding"])
def test_a_folder_from_before_the_field_still_resumes(tmp_path: Path, field: str) -> None:
    from webssl_cli.store.runconfig import fingerprint
    photos = _photos(tmp_path, 2)
    out = tmp_path / "out"
    args = cli_args([photos], out, "--shard-size", "1", "--num-workers", "0")
    assert cli_here(args + ["--limit-units", "1"]).returncode == 0
    path = OutputLayout(out).run_config_path
    doc = json.loads(path.read_text())
    del doc["fields"][field]                             # as written before the field existed
    doc["fingerprint"] = fingerprint(doc["fields"])
    path.write_text(json.dumps(doc))
    r = cli_here(args)
    assert r.returncode == 0, r.stderr
    assert field not in load_run_config(OutputLayout(out)).fields


def test_every_output_file_names_its_run_and_library_versions(tmp_path: Path) -> None:
    import PIL
    import torchvision

    from webssl_cli.store import read_provenance
    photos = _photos(tmp_path, 1)
    out = tmp_path / "out"
    for fmt in ("parquet", "npy"):
        r = cli_here(cli_args([photos], out / fmt, "--format", fmt, "--num-workers", "0"))
        assert r.returncode == 0, r.stderr
        config = load_run_config(OutputLayout(out / fmt))
        path = (out / fmt / "part-000000.parquet" if fmt == "parquet"
                else out / fmt / "metadata" / "000000.parquet")
        prov = read_provenance(path)["provenance"]
        assert (prov["fingerprint"], prov["run_id"]) == (config.fingerprint, config.run_id)
        assert prov["webssl"]["weights_sha256"] == config.fields["weights_sha256"]
        assert prov["versions"]["torch"] == torch.__version__
        assert prov["versions"]["torchvision"] == torchvision.__version__
        assert prov["versions"]["pillow"] == PIL.__version__


def test_a_stale_sidecar_beside_weights_is_caught_never_recorded(tmp_path: Path) -> None:
    """A `.sha256` beside a --weights file is checked before the run; the recorded value is
    the file's own hash, never a sidecar's that no verification stamp backs."""
    f = tmp_path / "w" / WEIGHTS.name
    f.parent.mkdir()
    shutil.copy(WEIGHTS, f)
    real = hashlib.sha256(f.read_bytes()).hexdigest()
    f.with_name(f.name + ".sha256").write_text(f"{'0' * 64}  {f.name}\n")
    assert weights_sha256(f) == real                  # an unverified sidecar is not trusted
    args = cli_args([_photos(tmp_path, 2)], tmp_path / "out", "--num-workers", "0")
    args[args.index("--weights") + 1] = str(f)
    r = cli_here(args)
    assert r.returncode == 1 and "checksum mismatch" in r.stderr and str(f) in r.stderr
    assert not (tmp_path / "out" / "_webssl" / "done").exists()
    f.with_name(f.name + ".sha256").write_text(f"{real}  {f.name}\n")
    r = cli_here(args)
    assert r.returncode == 0, r.stderr
    assert load_run_config(OutputLayout(tmp_path / "out")).fields["weights_sha256"] == real


def test_position_embedding_use_is_recorded_and_mae_off_224_is_labelled(tmp_path: Path) -> None:
    """Web-MAE's reference runs at its trained size only: another --resolution works (DINO's
    interpolation rule) but the output says it is outside the reference."""
    mae = WEIGHTS.parent.parent / "mae-tiny-p16"
    photos = _photos(tmp_path, 2)
    for res, family, expect in ((56, "dino", "as trained (4x4 patches)"),
                                (96, "mae", "outside the reference"),
                                (64, "mae", "as trained (4x4 patches)")):
        args = cli_args([photos], tmp_path / f"{family}{res}", "--num-workers", "0")
        args[args.index("--resolution") + 1] = str(res)
        if family == "mae":
            args[args.index("--model-config") + 1] = str(mae / "spec.json")
            args[args.index("--weights") + 1] = str(mae / "official.pth")
        r = cli_here(args)
        assert r.returncode == 0, r.stderr
        note = load_run_config(OutputLayout(tmp_path / f"{family}{res}")).fields["position_embedding"]
        assert expect in note
        assert ("outside the reference" in r.stderr) == (expect == "outside the reference")
