"""What the CLI says: --version, placeholders that name the values, help texts that match the
code's rules, --source checks, offline messages naming what is set, the bottleneck hint."""
from __future__ import annotations

import os
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.helpers.cli import cli_here

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "official" / "dino-tiny"
IMAGES = ROOT / "examples" / "images"


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_version_prints_the_package_version():
    r = cli_here(["--version"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"webssl {version('webssl-cli')}\n"


@pytest.mark.parametrize("command, shown", [
    ("extract", ["--format parquet|npy", "--decode cpu|gpu", "--precision bf16|fp16|fp32",
                 "--attention auto|flash|efficient|cudnn|math|xformers", "--source hf|pth",
                 "--batch-size N|auto", "--out-dtype float16|float32", "-i, --input SRC",
                 "--preprocess resize-crop|squash|shortest-crop", "--device cuda|cuda:N|cpu"]),
    ("bench", ["--batch-size N|auto", "--precision bf16|fp16|fp32", "--decode cpu|gpu",
               "--attention auto|flash|efficient|cudnn|math|xformers", "--iters N"]),
    ("download", ["--source hf|pth", "--cache-dir DIR"]),
    ("status", ["--manifest-name NAME"]),
])
def test_option_placeholders_say_the_values(command, shown):
    r = cli_here([command, "--help"], env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    options = r.stdout.split("Options:", 1)[1]
    for s in shown:
        assert s in options, s
    assert "<str>" not in options and "<int>" not in options and "<float>" not in options


def test_precision_default_is_said_the_same_way_as_the_code_decides_it():
    rule = ("bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16 or AMX), else fp32")
    for command in ("extract", "bench"):
        assert rule in _flat(cli_here([command, "--help"]).stdout), command
    docs = _flat((ROOT / "docs" / "options.md").read_text())
    assert docs.count(f"[{rule}]") == 2      # extract and bench


def test_extract_help_says_a_model_downloads_its_weights_on_first_use():
    text = _flat(cli_here(["extract", "--help"]).stdout)
    assert ("The first run with a --model downloads its weights into the cache (as `webssl "
            "download` does; later runs reuse them): pass --weights FILE to use a checkpoint "
            "you have, or --offline to never download.") in text


def _extract(tmp_path: Path, *extra: str, env: dict | None = None):
    return cli_here(["extract", "--input", IMAGES, "--out", tmp_path / "out", "--device", "cpu",
                     "--num-workers", "0", *extra], env=env)


@pytest.mark.parametrize("source", ["xyz", "HFF", ""])
def test_extract_source_is_checked_with_weights_too(tmp_path, source):
    r = _extract(tmp_path, "--model-config", TINY / "spec.json", "--weights",
                 TINY / "official.pth", "--resolution", "56", "--source", source)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == f"error: --source must be 'hf' or 'pth', got {source!r}"
    assert not (tmp_path / "out" / "_webssl" / "done").exists()


def test_extract_source_with_weights_is_refused(tmp_path):
    r = _extract(tmp_path, "--model", "dino300m-full2b-224", "--weights", TINY / "official.pth",
                 "--resolution", "56", "--source", "pth")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == ("error: --source picks what to download; --weights names a "
                                "file: give one of them")


def _offline_env(tmp_path: Path, **extra: str) -> dict[str, str | None]:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("HF_", "WEBSSL_"))}
    env.update({"WEBSSL_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf"),
                "HF_ENDPOINT": "http://127.0.0.1:9",
                "WEBSSL_PTH_BASE_URL": "http://127.0.0.1:9/webssl", **extra})
    return env


@pytest.mark.parametrize("source, var", [("hf", "WEBSSL_OFFLINE"), ("hf", "HF_HUB_OFFLINE"),
                                         ("pth", "WEBSSL_OFFLINE")])
def test_offline_from_the_environment_is_named_not_the_flag(tmp_path, source, var):
    r = _extract(tmp_path, "--model", "dino300m-full2b-224", "--resolution", "28",
                 "--source", source, env=_offline_env(tmp_path, **{var: "1"}))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"and {var}=1 is set." in r.stderr and "--offline is set" not in r.stderr
    assert f"webssl download dino300m-full2b-224 --source {source}" in r.stderr
    flag = _extract(tmp_path, "--model", "dino300m-full2b-224", "--resolution", "28",
                    "--source", source, "--offline", env=_offline_env(tmp_path))
    assert flag.returncode == 2 and "and --offline is set." in flag.stderr, flag.stderr


def test_bottleneck_hint_suggests_decode_gpu_only_where_it_can_run():
    from webssl_cli.pipeline.progress import Counters, summary
    now = time.perf_counter()
    c = Counters(images=1000, started=now - 12, loop_started=now - 10, first_batch=0.5,
                 model_seconds=3.0, wait_seconds=6.0)
    hint = "the input pipeline is the bottleneck (the model waited 6.0s for data): raise " \
           "--num-workers"
    assert f"{hint}." in summary(c, workers=4)                        # CPU run
    assert f"{hint}." in summary(c, workers=4, cuda=False)
    assert f"{hint} or use --decode gpu." in summary(c, workers=4, cuda=True)
    c.decode_thread_seconds = 3.0                                      # --decode gpu already
    assert f"{hint}." in summary(c, workers=4, cuda=True)
