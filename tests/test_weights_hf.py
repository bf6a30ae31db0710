"""The HF source: real huggingface_hub.snapshot_download against a Hub on 127.0.0.1."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from safetensors.numpy import load_file, save_file

from tests.helpers.hf_server import HFServer
from webssl_cli.errors import CheckpointError, WeightsMissingError
from webssl_cli.registry import resolve
from webssl_cli.weights import WeightsRequest, cached_sources, resolve_weights

OFFICIAL = Path(__file__).parent / "fixtures" / "official"
DINO = resolve("dino300m-full2b-224").record
MAE = resolve("mae300m-full2b-224").record
SHARDED = resolve("dino1b-full2b-224").record


def make_sharded(folder: Path) -> dict[str, bytes]:
    """dino-tiny's model.safetensors split in two shards + model.safetensors.index.json."""
    tensors = load_file(OFFICIAL / "dino-tiny" / "hf" / "model.safetensors")
    names = sorted(tensors)
    parts = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
             "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    folder.mkdir()
    weight_map = {}
    for shard, keys in parts.items():
        save_file({k: tensors[k] for k in keys}, str(folder / shard), metadata={"format": "pt"})
        weight_map.update({k: shard for k in keys})
    total = sum(t.nbytes for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (folder / "config.json").write_bytes((OFFICIAL / "dino-tiny" / "hf" / "config.json")
                                         .read_bytes())
    (folder / "README.md").write_text("not fetched: not in allow_patterns\n")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    sharded = make_sharded(tmp_path / "sharded-src")
    repos = {DINO.hf_repo: OFFICIAL / "dino-tiny" / "hf", MAE.hf_repo: OFFICIAL / "mae-tiny-p16" / "hf",
             SHARDED.hf_repo: sharded}
    with HFServer(repos) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
        for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE",
                    "WEBSSL_OFFLINE"):
            monkeypatch.delenv(var, raising=False)
        # huggingface_hub fetches an "agent harnesses" list from its import-time ENDPOINT
        # (huggingface.co here) unless a fresh copy is cached: give it one, in tmp_path.
        agents = tmp_path / "agents.json"
        agents.write_text(json.dumps({"standardEnvVars": [], "harnesses": {"none": {}}}))
        monkeypatch.setattr(hf_constants, "AGENT_HARNESSES_PATH", str(agents))
        srv.sharded = sharded
        yield srv


def req(record, **kw) -> WeightsRequest:
    return WeightsRequest(model=record, source="hf", progress=False, **kw)


def test_snapshot_download_matches_fixtures_and_uses_hf_home(hub, tmp_path):
    assert cached_sources(DINO) == {"hf": False, "pth": False}
    path = resolve_weights(req(DINO))
    expected_dir = (tmp_path / "hfhome" / "hub" / "models--facebook--webssl-dino300m-full2b-224"
                    / "snapshots" / hub.commit(DINO.hf_repo))
    assert path == expected_dir
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
    for name in ("config.json", "model.safetensors"):
        assert (path / name).read_bytes() == (OFFICIAL / "dino-tiny" / "hf" / name).read_bytes()
    assert cached_sources(DINO) == {"hf": True, "pth": False}
    # it went through the Hub API and the resolve endpoint, nowhere else
    paths = [r.path.split("?")[0] for r in hub.log]
    assert f"/api/models/{DINO.hf_repo}/revision/main" in paths
    assert any(p.endswith("/resolve/" + hub.commit(DINO.hf_repo) + "/model.safetensors")
               for p in paths)
    # cached: no further request, online or offline
    n = len(hub.log)
    assert resolve_weights(req(DINO)) == path
    assert resolve_weights(req(DINO, offline=True)) == path
    assert len(hub.log) == n


def test_sharded_repo_and_cache_dir(hub, tmp_path):
    path = resolve_weights(req(SHARDED, cache_dir=str(tmp_path / "cd")))
    assert path.parent.parent == tmp_path / "cd" / "models--facebook--webssl-dino1b-full2b-224"
    assert sorted(os.listdir(path)) == ["config.json", "model-00001-of-00002.safetensors",
                                        "model-00002-of-00002.safetensors",
                                        "model.safetensors.index.json"]
    for name in os.listdir(path):
        assert (path / name).read_bytes() == hub.sharded[name]
    assert cached_sources(SHARDED, cache_dir=str(tmp_path / "cd"))["hf"] is True
    # a lost shard makes the snapshot incomplete: offline names it
    os.unlink(path / "model-00002-of-00002.safetensors")
    assert cached_sources(SHARDED, cache_dir=str(tmp_path / "cd"))["hf"] is False
    with pytest.raises(WeightsMissingError, match="lacks model-00002-of-00002.safetensors"):
        resolve_weights(req(SHARDED, cache_dir=str(tmp_path / "cd"), offline=True))
    assert resolve_weights(req(SHARDED, cache_dir=str(tmp_path / "cd"))) == path
    assert (path / "model-00002-of-00002.safetensors").read_bytes() == \
        hub.sharded["model-00002-of-00002.safetensors"]


def test_hf_hub_cache_and_token_are_honoured(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))
    monkeypatch.setenv("HF_TOKEN", "hf_localtesttoken")
    path = resolve_weights(req(MAE))
    assert str(path).startswith(str(tmp_path / "hubcache" / "models--facebook--webssl-mae300m"))
    for name in ("config.json", "model.safetensors"):
        assert (path / name).read_bytes() == (OFFICIAL / "mae-tiny-p16" / "hf" / name).read_bytes()
    auth = {r.headers.get("Authorization") for r in hub.log if MAE.hf_repo in r.path}
    assert auth == {"Bearer hf_localtesttoken"}


def test_corrupted_blob_is_detected_and_not_kept(hub, tmp_path):
    good = (OFFICIAL / "dino-tiny" / "hf" / "model.safetensors").read_bytes()
    hub.corrupt[(DINO.hf_repo, "model.safetensors")] = good[:-4] + b"\0\0\0\0"
    with pytest.raises(CheckpointError, match="checksum mismatch.*It was deleted"):
        resolve_weights(req(DINO))
    assert cached_sources(DINO)["hf"] is False
    del hub.corrupt[(DINO.hf_repo, "model.safetensors")]
    path = resolve_weights(req(DINO))
    assert (path / "model.safetensors").read_bytes() == good


def test_offline_and_missing_hf_message(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsMissingError) as info:
        resolve_weights(req(DINO))
    msg = str(info.value)
    root = tmp_path / "hfhome" / "hub"
    assert "weights for dino300m-full2b-224 (facebook/webssl-dino300m-full2b-224) are not in " \
           "the Hugging Face cache" in msg
    assert "HF_HUB_OFFLINE=1 is set" in msg
    assert "`webssl download dino300m-full2b-224 --source hf --cache-dir DIR`" in msg
    assert f"DIR/models--facebook--webssl-dino300m-full2b-224 to {root}/" in msg
    assert hub.log == []


def test_verify_rehashes_hf_blobs(hub, capsys):
    path = resolve_weights(req(DINO))
    assert resolve_weights(req(DINO, verify=True)) == path
    assert "verified 1 safetensors file(s)" in capsys.readouterr().err
    blob = Path(os.path.realpath(path / "model.safetensors"))
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        resolve_weights(req(DINO, verify=True, offline=True))
    assert resolve_weights(req(DINO, verify=True)) == path     # online: fetched again
    assert (path / "model.safetensors").read_bytes() == \
        (OFFICIAL / "dino-tiny" / "hf" / "model.safetensors").read_bytes()
