"""`webssl download` through the real console script, against servers on 127.0.0.1."""
from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path

import pytest

from tests.helpers.cli import WEBSSL
from tests.helpers.hf_server import HFServer
from tests.helpers.http_range_server import RangeServer

FIX = Path(__file__).parent / "fixtures" / "official" / "dino-tiny"
NAME = "webssl_dino300m_full2b_224.pth"
REPO = "facebook/webssl-dino300m-full2b-224"
PAYLOAD = (FIX / "official.pth").read_bytes()


def env_for(tmp_path: Path, pth_base: str = "http://127.0.0.1:9/webssl",
            hf_endpoint: str = "http://127.0.0.1:9", **extra: str) -> dict[str, str]:
    """A clean environment: caches in tmp_path, every server on 127.0.0.1 (port 9: refused)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING", "WEBSSL_", "XDG_CACHE"))}
    env.update(WEBSSL_CACHE=str(tmp_path / "webssl-cache"), HF_HOME=str(tmp_path / "hf-home"),
               WEBSSL_PTH_BASE_URL=pth_base, HF_ENDPOINT=hf_endpoint,
               HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env


def webssl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([WEBSSL, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def pth_server():
    with RangeServer({NAME: PAYLOAD}) as srv:
        yield srv


def test_download_pth_with_progress_then_cached(pth_server, tmp_path):
    env = env_for(tmp_path, pth_base=pth_server.base_url)
    r = webssl("download", "dino300m-full2b-224", "--source", "pth", env=env)
    assert r.returncode == 0, r.stderr
    dest = tmp_path / "webssl-cache" / NAME
    assert r.stdout.strip() == str(dest)
    assert dest.read_bytes() == PAYLOAD
    assert f"downloading {NAME} (2.0 MB)" in r.stderr
    assert f"downloaded {NAME}: 100% (2.0 MB / 2.0 MB" in r.stderr
    assert (dest.parent / f"{NAME}.sha256").read_text().split()[0] == \
        hashlib.sha256(PAYLOAD).hexdigest()
    r2 = webssl("download", "webssl_dino300m_full2b_224.pth", "--source", "pth", env=env)
    assert r2.returncode == 0 and r2.stdout.strip() == str(dest)
    assert len(pth_server.requests("GET")) == 1


def test_download_resumes_after_drop(pth_server, tmp_path):
    pth_server.drop_after, pth_server.drops = len(PAYLOAD) // 2, 1
    r = webssl("download", "dino300m-full2b-224", "--source", "pth", "--cache-dir",
               str(tmp_path / "cd"), env=env_for(tmp_path, pth_base=pth_server.base_url))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cd" / NAME).read_bytes() == PAYLOAD
    gets = pth_server.requests("GET")
    assert len(gets) == 2 and gets[1].headers["Range"].startswith("bytes=")
    assert "connection dropped" in r.stderr and "retrying" in r.stderr


def test_checksum_mismatch_exits_1_and_installs_nothing(pth_server, tmp_path):
    pth_server.etag[NAME] = '"' + "ab" * 32 + '"'
    r = webssl("download", "dino300m-full2b-224", "--source", "pth",
               env=env_for(tmp_path, pth_base=pth_server.base_url))
    assert r.returncode == 1
    assert "checksum mismatch" in r.stderr and "The download was discarded" in r.stderr
    assert not (tmp_path / "webssl-cache" / NAME).exists()


def test_two_processes_download_one_file(pth_server, tmp_path):
    pth_server.gate = threading.Event()
    env = env_for(tmp_path, pth_base=pth_server.base_url)
    cmd = [WEBSSL, "download", "dino300m-full2b-224", "--source", "pth"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert pth_server.gate_reached.wait(60), "first process never reached the server"
        second = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            line = second.stderr.readline()       # blocks until it reports the wait
            assert line.startswith("waiting for another process that is downloading " + NAME)
        finally:
            pth_server.gate.set()
            out2, err2 = second.communicate(timeout=60)
    finally:
        pth_server.gate.set()
        out1, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    dest = tmp_path / "webssl-cache" / NAME
    assert out1.strip() == out2.strip() == str(dest)
    assert dest.read_bytes() == PAYLOAD
    assert len(pth_server.requests("GET")) == 1
    assert sorted(p.name for p in dest.parent.iterdir()) == \
        [NAME, f"{NAME}.lock", f"{NAME}.sha256", f"{NAME}.verified"]


def test_offline_missing_pth_exits_2_with_instructions(tmp_path):
    r = webssl("download", "dino300m-full2b-224", "--source", "pth",
               env=env_for(tmp_path, HF_HUB_OFFLINE="1"))
    assert r.returncode == 2
    dest = tmp_path / "webssl-cache" / NAME
    assert r.stderr.startswith("error: weights for dino300m-full2b-224 are not in the cache "
                               f"(looked for {dest}) and HF_HUB_OFFLINE=1 is set.")
    assert "`webssl download dino300m-full2b-224 --source pth --cache-dir DIR`" in r.stderr
    assert f"then copy DIR/{NAME} and DIR/{NAME}.sha256 to {dest.parent}/" in r.stderr


def test_offline_missing_hf_exits_2_and_renamed_model_notice(tmp_path):
    r = webssl("download", "dino7b-full8b-384", env=env_for(tmp_path, WEBSSL_OFFLINE="1"))
    assert r.returncode == 2
    assert "note: dino7b-full8b-384 was released as dino7b-full8b-378" in r.stderr
    assert "weights for dino7b-full8b-378 (facebook/webssl-dino7b-full8b-378) are not in the " \
           "Hugging Face cache" in r.stderr
    assert f"to {tmp_path / 'hf-home' / 'hub'}/" in r.stderr


def test_usage_errors_exit_2(tmp_path):
    env = env_for(tmp_path)
    r = webssl("download", "dino9b-full2b-224", env=env)
    assert r.returncode == 2 and "unknown model 'dino9b-full2b-224'" in r.stderr
    r = webssl("download", "mae300m-full2b-224", "--teacher", env=env)
    assert r.returncode == 2 and "has no released teacher checkpoint" in r.stderr
    r = webssl("download", "dino300m-light2b-224", "--source", "pth", env=env)
    assert r.returncode == 2 and "use --source hf" in r.stderr


def test_hf_download_through_hf_endpoint_two_at_once(tmp_path):
    with HFServer({REPO: FIX / "hf"}) as hub:
        env = env_for(tmp_path, hf_endpoint=hub.endpoint)
        cmd = [WEBSSL, "download", "dino300m-full2b-224", "-q"]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
        for out, err, code in results:
            assert code == 0, err
        snap = (tmp_path / "hf-home" / "hub" / "models--facebook--webssl-dino300m-full2b-224"
                / "snapshots" / hub.commit(REPO))
        assert results[0][0].strip() == results[1][0].strip() == str(snap)
        for name in ("config.json", "model.safetensors"):
            assert (snap / name).read_bytes() == (FIX / "hf" / name).read_bytes()
        assert len(hub.requests("GET", "/resolve/")) == 2      # each file fetched once
        r = webssl("download", "dino300m-full2b-224", env={**env, "HF_HUB_OFFLINE": "1"})
        assert r.returncode == 0 and r.stdout.strip() == str(snap)


def test_terminal_gets_a_rich_progress_bar(pth_server, tmp_path):
    env = env_for(tmp_path, pth_base=pth_server.base_url, TTY_COMPATIBLE="1", COLUMNS="120")
    r = webssl("download", "dino300m-full2b-224", "--source", "pth", "--cache-dir",
               str(tmp_path / "tty"), env=env)
    assert r.returncode == 0, r.stderr
    assert "2.0/2.0 MB" in r.stderr and "━" in r.stderr          # rich bar, not plain lines
    assert "downloaded " not in r.stderr
    r = webssl("download", "dino300m-full2b-224", "--source", "pth", "-q", "--cache-dir",
               str(tmp_path / "quiet"), env=env)
    assert r.returncode == 0 and r.stderr == ""
