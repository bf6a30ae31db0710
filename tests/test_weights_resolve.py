"""resolve_weights / cached_sources for the .pth source against a real server on 127.0.0.1."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.http_range_server import RangeServer
from webssl_cli.errors import CheckpointError, UsageError, WebsslError, WeightsMissingError
from webssl_cli.registry import resolve
from webssl_cli.weights import WeightsRequest, cached_sources, effective_source, resolve_weights

FIX = Path(__file__).parent / "fixtures" / "official" / "dino-tiny"
DINO = resolve("dino300m-full2b-224").record
NAME = "webssl_dino300m_full2b_224.pth"
TEACHER = "webssl_dino300m_full2b_224_ssl_teacher.pth"


@pytest.fixture
def server(monkeypatch, tmp_path):
    files = {NAME: (FIX / "official.pth").read_bytes(), TEACHER: (FIX / "teacher.pth").read_bytes()}
    with RangeServer(files) as srv:
        monkeypatch.setenv("WEBSSL_PTH_BASE_URL", srv.base_url)
        monkeypatch.setenv("WEBSSL_CACHE", str(tmp_path / "cache"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("WEBSSL_OFFLINE", raising=False)
        yield srv


def pth(**kw) -> WeightsRequest:
    return WeightsRequest(model=DINO, source="pth", progress=False, **kw)


def test_explicit_weights_win_without_network(server, tmp_path):
    assert resolve_weights(pth(), explicit=str(FIX / "official.pth")) == FIX / "official.pth"
    assert resolve_weights(pth(offline=True), explicit=str(FIX / "hf")) == FIX / "hf"
    assert server.log == []
    with pytest.raises(UsageError, match=r"--weights .*nope\.pth: no such file"):
        resolve_weights(pth(), explicit=str(tmp_path / "nope.pth"))


def test_download_once_then_cache_then_offline(server, tmp_path):
    assert cached_sources(DINO) == {"hf": False, "pth": False}
    path = resolve_weights(pth())
    assert path == tmp_path / "cache" / NAME
    assert path.read_bytes() == (FIX / "official.pth").read_bytes()
    assert cached_sources(DINO) == {"hf": False, "pth": True}
    assert cached_sources(DINO, cache_dir=str(tmp_path / "elsewhere")) == {"hf": False,
                                                                          "pth": False}
    n = len(server.log)
    assert resolve_weights(pth()) == path
    assert resolve_weights(pth(offline=True)) == path
    assert len(server.log) == n


def test_teacher_checkpoint(server, tmp_path):
    req = WeightsRequest(model=DINO, teacher=True, progress=False, cache_dir=str(tmp_path / "d"))
    path = resolve_weights(req)
    assert path == tmp_path / "d" / TEACHER
    assert path.read_bytes() == (FIX / "teacher.pth").read_bytes()


def test_source_choice_and_its_errors():
    assert effective_source(WeightsRequest(model=DINO)) == "hf"
    assert effective_source(WeightsRequest(model=resolve("dino1b-in1k-224").record)) == "pth"
    bad = [
        (WeightsRequest(model=DINO, source="s3"), "--source must be 'hf' or 'pth'"),
        (WeightsRequest(model=resolve("dino1b-in1k-224").record, source="hf"),
         "dino1b-in1k-224 has no Hugging Face repository; use --source pth"),
        (WeightsRequest(model=resolve("dino300m-light2b-224").record, source="pth"),
         "only released on Hugging Face"),
        (WeightsRequest(model=resolve("mae300m-full2b-224").record, teacher=True),
         "mae300m-full2b-224 has no released teacher checkpoint"),
        (WeightsRequest(model=DINO, source="hf", teacher=True), "--source pth --teacher"),
    ]
    for req, message in bad:
        with pytest.raises(UsageError, match=message.replace("(", r"\(")):
            effective_source(req)


def test_offline_and_missing_says_how_to_fetch(server, tmp_path):
    with pytest.raises(WeightsMissingError) as info:
        resolve_weights(pth(offline=True))
    msg = str(info.value)
    assert info.value.exit_code == 2
    assert f"weights for dino300m-full2b-224 are not in the cache (looked for " \
           f"{tmp_path / 'cache' / NAME})" in msg
    assert "--offline is set" in msg
    assert "`webssl download dino300m-full2b-224 --source pth --cache-dir DIR`" in msg
    assert f"copy DIR/{NAME} and DIR/{NAME}.sha256 to {tmp_path / 'cache'}/" in msg
    assert server.log == []


def test_offline_from_environment_mentions_partial_download(server, tmp_path, monkeypatch):
    monkeypatch.setenv("WEBSSL_OFFLINE", "1")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"{NAME}.part").write_bytes(b"x" * 10)
    with pytest.raises(WeightsMissingError, match="WEBSSL_OFFLINE=1 is set") as info:
        resolve_weights(pth())
    assert "partial download" in str(info.value) and "(10 bytes)" in str(info.value)
    monkeypatch.delenv("WEBSSL_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsMissingError, match="HF_HUB_OFFLINE=1 is set"):
        resolve_weights(pth(teacher=True))
    assert server.log == []


def test_damaged_cache_is_not_used(server, tmp_path, capsys):
    path = resolve_weights(pth())
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        resolve_weights(pth(offline=True))
    assert resolve_weights(pth()) == path          # online: dropped and fetched again
    assert path.read_bytes() == good
    assert "not using" in capsys.readouterr().err


def test_verify_rehashes_even_when_the_stamp_matches(server):
    path = resolve_weights(pth())
    good, st = path.read_bytes(), path.stat()
    path.write_bytes(b"\0" * len(good))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert resolve_weights(pth()) == path            # cheap check: stamp matches
    assert path.read_bytes() != good
    gets = len(server.requests("GET"))
    assert resolve_weights(pth(verify=True)) == path
    assert path.read_bytes() == good
    assert len(server.requests("GET")) == gets + 1


def test_unwritable_cache_is_a_clear_error(server, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(WebsslError, match="Downloading needs a writable cache folder") as info:
        resolve_weights(pth(cache_dir=str(blocker / "cache")))
    assert str(blocker / "cache" / f"{NAME}.lock") in str(info.value)
    assert server.log == []
