"""Weights errors that say what is wrong with the user's input: a --weights file that is not a
checkpoint, weights that do not fit the model (exit 2), an unwritable sidecar, a Hub that
answers 404 (not 'cannot reach'), and an interrupted download that says how to resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.cli import WEBSSL, child_env, cli_here
from tests.helpers.http_range_server import RangeServer
from webssl_cli.errors import WebsslError
from webssl_cli.registry import resolve
from webssl_cli.weights import WeightsRequest, resolve_weights, verify_file

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / "tests" / "fixtures" / "official"
TINY = OFFICIAL / "dino-tiny"
IMAGES = ROOT / "examples" / "images"
NAME = "webssl_dino300m_full2b_224.pth"
PAYLOAD = (TINY / "official.pth").read_bytes()


def _extract(tmp_path: Path, weights: Path) -> subprocess.CompletedProcess:
    return cli_here(["extract", "--model-config", TINY / "spec.json", "--weights", weights,
                     "--resolution", "56", "--input", IMAGES, "--out", tmp_path / "out",
                     "--device", "cpu"])


def test_weights_given_a_json_file_says_what_is_accepted(tmp_path):
    r = _extract(tmp_path, TINY / "spec.json")
    assert r.returncode == 2, r.stderr
    assert f"weights {TINY / 'spec.json'}: not a PyTorch checkpoint, safetensors file or " \
           f"Hugging Face folder (it is JSON text" in r.stderr
    assert "a .safetensors file, or a Hugging Face model folder" in r.stderr
    assert "webssl download" not in r.stderr and "truncated" not in r.stderr


def test_weights_given_a_text_file_with_pth_suffix(tmp_path):
    fake = tmp_path / "model.pth"
    fake.write_text("hello, not weights\n")
    r = _extract(tmp_path, fake)
    assert r.returncode == 2, r.stderr
    assert "not a PyTorch checkpoint" in r.stderr and "'hello, not weights" in r.stderr


def test_weights_of_another_architecture_exit_2(tmp_path):
    r = _extract(tmp_path, OFFICIAL / "mae-tiny-p16" / "official.pth")
    assert r.returncode == 2, r.stderr
    assert "does not fit" in r.stderr and "missing keys" in r.stderr
    assert "Traceback" not in r.stderr


def test_truncated_checkpoint_advice_covers_both_origins(tmp_path):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(PAYLOAD[: len(PAYLOAD) // 2])
    r = _extract(tmp_path, cut)
    assert r.returncode == 1, r.stderr
    assert "truncated or corrupt" in r.stderr
    assert "If it is a cached download" in r.stderr and "otherwise check the copy" in r.stderr


def test_unrecordable_sidecar_is_said_not_claimed(tmp_path, capsys):
    f = tmp_path / "w.pth"
    f.write_bytes(PAYLOAD)
    (tmp_path / "w.pth.sha256").mkdir()   # the sidecar cannot be written (as on a read-only cache)
    verify_file(f)
    err = capsys.readouterr().err
    assert "could not record it" in err and "it will be rehashed on each load" in err
    assert "recorded sha256" not in err


def test_missing_sidecar_is_recorded(tmp_path, capsys):
    f = tmp_path / "w.pth"
    f.write_bytes(PAYLOAD)
    verify_file(f)
    assert "recorded sha256" in capsys.readouterr().err
    assert (tmp_path / "w.pth.sha256").is_file()


# --- Hugging Face: not found vs unreachable ---------------------------------------------------

@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps({"standardEnvVars": [], "harnesses": {"none": {}}}))
    monkeypatch.setattr(hf_constants, "AGENT_HARNESSES_PATH", str(agents))
    for var in ("HF_HUB_OFFLINE", "WEBSSL_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _hf_request(tmp_path: Path) -> WeightsRequest:
    return WeightsRequest(resolve("dino300m-full2b-224").record, source="hf",
                          cache_dir=str(tmp_path / "cache"), progress=False)


def test_hf_404_from_a_reachable_server_is_not_found(hub_env, tmp_path):
    with RangeServer({}) as srv:   # a plain web server: answers 404 without Hub error codes
        endpoint = f"http://127.0.0.1:{srv.port}"
        hub_env.setenv("HF_ENDPOINT", endpoint)
        with pytest.raises(WebsslError) as info:
            resolve_weights(_hf_request(tmp_path))
    msg = str(info.value)
    assert f"not found at {endpoint} (HTTP 404" in msg and "the server answered" in msg
    assert "cannot reach" not in msg


def test_hf_unreachable_server_says_cannot_reach(hub_env, tmp_path):
    hub_env.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(WebsslError, match=r"cannot reach http://127\.0\.0\.1:9"):
        resolve_weights(_hf_request(tmp_path))


# --- interrupted download -------------------------------------------------------------------

def test_ctrl_c_during_download_keeps_the_part_and_says_how_to_resume(tmp_path):
    cache = tmp_path / "cache"
    part = cache / f"{NAME}.part"
    with RangeServer({NAME: PAYLOAD}) as srv:
        srv.chunk_delay = 0.2   # 32 chunks: several seconds, time to interrupt half-way
        env = child_env({"WEBSSL_PTH_BASE_URL": srv.base_url, "WEBSSL_CACHE": str(cache),
                         "WEBSSL_OFFLINE": None, "HF_HUB_OFFLINE": None})
        p = subprocess.Popen([WEBSSL, "download", "dino300m-full2b-224", "--source", "pth",
                              "--quiet"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            while not (part.exists() and part.stat().st_size > 0) and p.poll() is None:
                time.sleep(0.05)
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=60)
        finally:
            p.kill()
        assert p.returncode == 4, err
        assert "interrupted; rerun the same command to resume the download" in err
        assert f"partial file kept: {part}" in err and "Traceback" not in err
        assert 0 < part.stat().st_size < len(PAYLOAD)
        srv.chunk_delay = 0.0
        r = subprocess.run([WEBSSL, "download", "dino300m-full2b-224", "--source", "pth",
                            "--quiet"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert (cache / NAME).read_bytes() == PAYLOAD
        assert srv.requests("GET")[-1].headers.get("Range", "").startswith("bytes=")
    assert not os.path.exists(part)


def _without_root_bypass() -> list[str]:
    """A command prefix that drops root's permission bypass (CAP_DAC_OVERRIDE), so that a
    file with mode 000 is unreadable as it is for any user; skip where that cannot be done."""
    import shutil
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to make a file unreadable to the run")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def test_unreadable_weights_and_output_folder_are_one_line_errors(tmp_path):
    """No traceback: unreadable weights are an input error naming the file (exit 2); a
    folder `status` cannot read says which file, exit 1."""
    prefix = _without_root_bypass()
    weights = tmp_path / "w.pth"
    weights.write_bytes(PAYLOAD)
    weights.chmod(0)
    r = subprocess.run([*prefix, WEBSSL, "extract", "--model-config", str(TINY / "spec.json"),
                        "--weights", str(weights), "--resolution", "56", "--input", str(IMAGES),
                        "--out", str(tmp_path / "out"), "--device", "cpu"],
                       capture_output=True, text=True, env=child_env({}), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"weights {weights}: cannot read" in r.stderr and "Permission denied" in r.stderr
    manifest = tmp_path / "o" / "_webssl"
    manifest.mkdir(parents=True)
    (manifest / "run.json").write_text("{}")
    manifest.chmod(0)
    try:
        r = subprocess.run([*prefix, WEBSSL, "status", str(tmp_path / "o")], capture_output=True,
                           text=True, env=child_env({}), timeout=120)
    finally:
        manifest.chmod(0o755)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "run.json: Permission denied" in r.stderr


# --- --cache-dir that is a file ---------------------------------------------------------------

def test_cache_dir_that_is_a_file_is_a_usage_error(tmp_path):
    afile = tmp_path / "cache"
    afile.write_text("not a folder")
    r = cli_here(["download", "dino300m-full2b-224", "--source", "pth", "--cache-dir", afile],
                 env={"WEBSSL_PTH_BASE_URL": "http://127.0.0.1:9/webssl"})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == f"error: --cache-dir {afile} is a file, not a folder: give a " \
                               "folder (it is made if missing)"
    assert afile.read_text() == "not a folder"
