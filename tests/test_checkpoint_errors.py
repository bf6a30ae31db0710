"""Corrupted or mismatched checkpoints fail loudly with a specific message."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from webssl_cli import create_model
from webssl_cli.errors import CheckpointError

FIX = Path(__file__).parent / "fixtures" / "official"
DINO, MAE = FIX / "dino-tiny", FIX / "mae-tiny-p16"


def _official() -> dict[str, torch.Tensor]:
    return dict(torch.load(DINO / "official.pth", weights_only=True))


def _load(path: Path, spec: Path = DINO / "spec.json"):
    return create_model(spec, weights=path)


def test_missing_key(tmp_path: Path) -> None:
    sd = _official()
    del sd["blocks.4.8.mlp.w3.weight"]
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"m\.pth does not fit custom.*1 missing keys: blocks\.8\.mlp\.w3\.weight"):
        _load(tmp_path / "m.pth")


def test_unexpected_key(tmp_path: Path) -> None:
    sd = _official()
    sd["register_tokens"] = torch.zeros(1, 4, 64)
    torch.save(sd, tmp_path / "u.pth")
    with pytest.raises(CheckpointError, match="1 unexpected keys: register_tokens"):
        _load(tmp_path / "u.pth")


def test_wrong_shape(tmp_path: Path) -> None:
    sd = _official()
    sd["pos_embed"] = torch.zeros(1, 257, 64)
    torch.save(sd, tmp_path / "s.pth")
    with pytest.raises(CheckpointError, match=r"1 shape mismatches: pos_embed: checkpoint \(1, 257, 64\) vs model \(1, 17, 64\)"):
        _load(tmp_path / "s.pth")


def test_many_problems_are_counted(tmp_path: Path) -> None:
    sd = {k: v for k, v in _official().items() if ".mlp." not in k}
    torch.save(sd, tmp_path / "many.pth")
    with pytest.raises(CheckpointError, match=r"36 missing keys: .*\(\+31 more\)"):
        _load(tmp_path / "many.pth")


def test_truncated_pth(tmp_path: Path) -> None:
    data = (DINO / "official.pth").read_bytes()
    (tmp_path / "t.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        _load(tmp_path / "t.pth")


def test_truncated_safetensors(tmp_path: Path) -> None:
    d = tmp_path / "hf"
    shutil.copytree(DINO / "hf", d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        _load(d)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_with_arbitrary_object_refused(tmp_path: Path) -> None:
    sd = _official()
    sd["extra"] = Evil()
    torch.save(sd, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refusing to load.*unsafe unpickling"):
        _load(tmp_path / "evil.pth")


def test_plain_pickle_refused(tmp_path: Path) -> None:
    with open(tmp_path / "plain.pth", "wb") as fh:
        pickle.dump({"a": Evil()}, fh)
    with pytest.raises(CheckpointError, match="refusing to load|truncated or corrupt"):
        _load(tmp_path / "plain.pth")


def test_hf_config_wrong_eps(tmp_path: Path) -> None:
    d = tmp_path / "hf"
    shutil.copytree(DINO / "hf", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-12
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config\.json contradicts.*layer_norm_eps=1e-12"):
        _load(d)


def test_hf_config_wrong_depth(tmp_path: Path) -> None:
    d = tmp_path / "hf"
    shutil.copytree(MAE / "hf", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_hidden_layers"] = 4
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"num_hidden_layers=4 \(expected 3\)"):
        _load(d, MAE / "spec.json")


def test_hf_sharded_and_prefixed(tmp_path: Path) -> None:
    """A sharded HF folder with a `dinov2.` prefix loads; the pooler of ViT is ignored."""
    d = tmp_path / "sharded"
    d.mkdir()
    shutil.copy(DINO / "hf" / "config.json", d)
    sd = {f"dinov2.{k}": v for k, v in load_file(DINO / "hf" / "model.safetensors").items()}
    keys = sorted(sd)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half],
              "model-00002-of-00002.safetensors": keys[half:]}
    for name, ks in shards.items():
        save_file({k: sd[k].contiguous() for k in ks}, d / name)
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}))
    ref = _load(DINO / "official.pth")
    got = _load(d)
    x = torch.randn(1, 3, 56, 56)
    assert torch.allclose(ref(x), got(x), atol=1e-6)


def test_mae_checkpoint_into_dino_architecture(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not fit"):
        _load(MAE / "official.pth")


def test_unchunked_official_layout(tmp_path: Path) -> None:
    from webssl_cli.checkpoints.convert import dechunk
    torch.save(dechunk(_official()), tmp_path / "flat.pth")
    model = _load(tmp_path / "flat.pth")
    assert model.load_report.layout == "official"


@pytest.mark.parametrize("spec, weights", [
    (DINO / "spec.json", DINO / "official.pth"), (DINO / "spec.json", DINO / "teacher.pth"),
    (DINO / "spec.json", DINO / "hf"), (MAE / "spec.json", MAE / "official.pth"),
    (MAE / "spec.json", MAE / "hf")])
def test_the_shapes_only_check_agrees_with_the_load(spec: Path, weights: Path, tmp_path) -> None:
    """``check_weights`` (names and shapes, no data read: a run's check before it writes
    anything) accepts what loads, and refuses what does not fit with the load's own message;
    a file whose tensor data is damaged but whose index is whole still passes it (only the
    load reads the data)."""
    from webssl_cli.backbone.factory import check_weights
    check_weights(spec, weights)
    other = MAE / "spec.json" if spec.parent == DINO else DINO / "spec.json"
    with pytest.raises(CheckpointError) as by_load:
        _load(weights, other)
    with pytest.raises(CheckpointError) as by_check:
        check_weights(other, weights)
    assert str(by_check.value) == str(by_load.value)
    if weights.suffix == ".pth":           # zero the stored data, keep the zip's index
        data = bytearray(weights.read_bytes())
        start = data.find(b"/data/0") + 64
        data[start:start + 256] = bytes(256)
        (tmp_path / "w.pth").write_bytes(bytes(data))
        check_weights(spec, tmp_path / "w.pth")
