"""`webssl list-models` / `info` through the real console script, exit codes checked."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.cli import WEBSSL


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "COLUMNS": "250", **(env or {})}
    return subprocess.run([WEBSSL, *args], capture_output=True, text=True, env=e, timeout=60)


def test_list_models_table(tmp_path: Path) -> None:
    r = run("list-models", env={"WEBSSL_CACHE": str(tmp_path), "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 0, r.stderr
    for name in ("dino300m-full2b-224", "dino7b-full8b-518", "mae3b-full2b-224", "dino2b-in1k-224"):
        assert name in r.stdout
    assert "CC-BY-NC" in r.stdout


def test_list_models_json_and_filter(tmp_path: Path) -> None:
    r = run("list-models", "dino7b", "--json", env={"WEBSSL_CACHE": str(tmp_path),
                                                    "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["name"] for x in rows] == ["dino7b-full8b-224", "dino7b-full8b-378", "dino7b-full8b-518"]
    r518 = rows[2]
    assert r518["tokens"] == 1369 and r518["params"] == 6_454_729_728
    assert round(r518["gflops_per_image"]) == 18649
    assert r518["fp16_bytes_patches"] == 2 * 4096 * 1369
    assert r518["cached"] == {"hf": False, "pth": False}


def test_list_models_does_not_import_torch() -> None:
    code = ("import sys; from webssl_cli.cli.app import main\n"
            "try:\n    main(['list-models', '--json'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_info_shows_urls_and_preprocessing() -> None:
    r = run("info", "facebook/webssl-dino1b-full2b-224")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["pth_url"] == "https://dl.fbaipublicfiles.com/webssl/webssl_dino1b_full2b_224.pth"
    assert d["teacher_url"].endswith("webssl_dino1b_full2b_224_ssl_teacher.pth")
    assert d["hf_repo"] == "facebook/webssl-dino1b-full2b-224"
    assert "256" in d["preprocessing"]["default"] and "224" in d["preprocessing"]["default"]


def test_seed_alias_384_gives_notice() -> None:
    r = run("info", "webssl-dino7b-full8b-384")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "dino7b-full8b-378"
    assert "384" in r.stderr and "378" in r.stderr


def test_never_released_mae7b_exits_2() -> None:
    r = run("info", "webssl-mae7b-full2b-224")
    assert r.returncode == 2
    assert "never released" in r.stderr and "mae3b-full2b-224" in r.stderr


def test_unknown_name_exits_2_with_suggestion() -> None:
    r = run("info", "dino2b-ful2b-224")
    assert r.returncode == 2
    assert "dino2b-full2b-224" in r.stderr


def test_python_m_entry_point() -> None:
    r = subprocess.run([sys.executable, "-m", "webssl_cli", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "extract" in r.stdout


def test_list_models_no_match_exits_2_with_message() -> None:
    r = run("list-models", "zzz")
    assert r.returncode == 2
    assert "no model matches 'zzz'" in r.stderr and "Traceback" not in r.stderr
    assert "Web-SSL models" not in r.stdout
    close = run("list-models", "dino7b-full8b-384x")   # a near miss gets suggestions
    assert close.returncode == 2 and "Did you mean: dino7b-full8b-384" not in close.stderr
    assert "Did you mean:" in close.stderr and "dino7b-full8b-3" in close.stderr


def test_list_models_and_info_honour_cache_dir(tmp_path: Path) -> None:
    cache = tmp_path / "dl"
    cache.mkdir()
    (cache / "webssl_dino300m_full2b_224.pth").write_bytes(b"x")   # as `download --cache-dir`
    env = {"WEBSSL_CACHE": str(tmp_path / "default"), "HF_HOME": str(tmp_path / "hf")}
    rows = json.loads(run("list-models", "dino300m-full2b", "--json", "--cache-dir", str(cache),
                          env=env).stdout)
    assert rows[0]["cached"] == {"hf": False, "pth": True}
    rows = json.loads(run("list-models", "dino300m-full2b", "--json", env=env).stdout)
    assert rows[0]["cached"] == {"hf": False, "pth": False}
    info = run("info", "dino300m-full2b-224", "--cache-dir", str(cache), env=env)
    assert info.returncode == 0 and json.loads(info.stdout)["cached"]["pth"] is True


def test_list_models_names_are_never_folded(tmp_path: Path) -> None:
    from webssl_cli.registry import MODELS
    r = run("list-models", env={"COLUMNS": "100", "WEBSSL_CACHE": str(tmp_path),
                                "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 0, r.stderr
    for m in MODELS:
        assert m.name in r.stdout, f"{m.name} folded in:\n{r.stdout}"


def test_unknown_name_without_a_close_match_suggests_names_starting_with_it() -> None:
    r = run("info", "dino300")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "Did you mean: dino300m-full2b-224, dino300m-light2b-224?" in r.stderr
