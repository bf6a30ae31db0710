"""`webssl bench` refuses nonsense options, models that cannot fit, unknown devices and
mixed-up --model / --model-config values with exit 2 and a message (no traceback)."""
from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path

import pytest

from tests.helpers.cli import WEBSSL, child_env, cli_here
from webssl_cli.bench.memory import (MemoryNeed, bench_memory_need, check_fits,
                                     host_available_bytes)
from webssl_cli.errors import UsageError
from webssl_cli.registry import param_count, resolve

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "official" / "dino-tiny"
SPEC = TINY / "spec.json"
BASE = ["bench", "--model-config", str(SPEC), "--device", "cpu", "--batch-size", "2",
        "--warmup", "0", "--iters", "1", "--precision", "fp32"]
IMAGES = ROOT / "examples" / "images"
INPUT = ["bench", "--input", str(IMAGES), "--num-workers", "0", "--batch-size", "2"]


def _usage(r, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_peak_tflops_must_be_finite_and_positive(value):
    _usage(cli_here([*BASE, "--peak-tflops", value]), "--peak-tflops must be a finite number > 0")


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_input_seconds_must_be_positive(value):
    _usage(cli_here([*INPUT, "--seconds", value]),
           "--seconds must be a number of seconds > 0")


@pytest.mark.parametrize("value", ["-14", "0"])
def test_resolution_must_be_positive(value):
    _usage(cli_here([*BASE, "--resolution", value]),
           "--resolution must be a positive multiple of the patch size", f"got {value}")


def test_resolution_not_a_multiple_names_the_neighbours():
    _usage(cli_here([*BASE, "--resolution", "20"]), "not a multiple of the patch size 14",
           "try 14 or 28")


def test_resolution_is_checked_with_input_too():
    _usage(cli_here([*INPUT, "--model-config", SPEC, "--resolution", "-14"]),
           "--resolution must be a positive multiple")


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu"])
def test_unknown_device_is_a_usage_error(device):
    _usage(cli_here([*BASE[:3], "--device", device, *BASE[5:]]),
           f"--device must be cpu, cuda or cuda:N, got {device!r}")


def test_extract_unknown_device_is_a_usage_error(tmp_path):
    r = cli_here(["extract", "--model-config", SPEC, "--weights", TINY / "official.pth",
                  "--resolution", "56", "--input", ROOT / "examples" / "images",
                  "--out", tmp_path / "out", "--device", "tpu"])
    _usage(r, "--device must be cpu, cuda or cuda:N, got 'tpu'")


# --- an option of the other mode (model step / --input) is refused, not ignored -------------

@pytest.mark.parametrize("extra, name", [
    (["--compile"], "--compile"), (["--precision", "fp32"], "--precision"),
    (["--device", "cpu"], "--device"), (["--attention", "math"], "--attention"),
    (["--no-pad-ffn"], "--pad-ffn/--no-pad-ffn"), (["--warmup", "0"], "--warmup"),
    (["--iters", "3"], "--iters"), (["--peak-tflops", "100"], "--peak-tflops"),
    (["--batch-size", "auto"], "--batch-size auto"),
    (["--features", "cls,patches"], "--features"), (["--out-dtype", "float32"], "--out-dtype"),
    (["--model-config", str(SPEC), "--features", "patches"], "--features"),   # no --images
])
def test_model_options_with_input_exit_2(extra, name):
    _usage(cli_here([*INPUT, *extra]),
           f"error: {name} has no effect with --input (which times the input pipeline "
           "alone)", "drop it")


@pytest.mark.parametrize("extra, name", [
    (["--num-workers", "4"], "--num-workers"), (["--decode", "gpu"], "--decode"),
    (["--seconds", "5"], "--seconds"), (["--preprocess", "squash"], "--preprocess"),
    (["--jpeg-draft"], "--jpeg-draft"),
])
def test_input_options_without_input_exit_2(extra, name):
    _usage(cli_here([*BASE, *extra]),
           f"error: {name} has no effect without --input (bench then times the model on "
           "synthetic images); drop it, or add --input SRC")


def test_options_of_the_mode_given_explicitly_are_accepted():
    r = cli_here([*INPUT, "--model-config", SPEC, "--images", "10", "--features", "cls,patches",
                  "--out-dtype", "float32", "--resolution", "56", "--seconds", "1",
                  "--preprocess", "squash", "--decode", "cpu", "--jpeg-draft", "--json"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["projection"]["images"] == 10


# --- --model / --model-config -------------------------------------------------------------

def test_model_config_given_a_checkpoint(tmp_path):
    _usage(cli_here(["bench", "--model-config", TINY / "official.pth", "--device", "cpu"]),
           f"--model-config {TINY / 'official.pth'}: not a JSON text file",
           "pass weights with --weights")


def test_model_config_given_a_folder(tmp_path):
    (tmp_path / "adir").mkdir()
    _usage(cli_here(["bench", "--model-config", tmp_path / "adir", "--device", "cpu"]),
           "is a folder; give the JSON file")


def test_model_config_given_a_registry_name():
    _usage(cli_here(["bench", "--model-config", "dino1b-full2b-224", "--device", "cpu"]),
           "--model-config takes an architecture JSON file",
           "use --model dino1b-full2b-224")


def test_model_given_a_spec_file():
    _usage(cli_here(["bench", "--model", SPEC, "--device", "cpu"]),
           "--model takes a registry name", f"use --model-config {SPEC}")


def test_model_config_unreadable_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _usage(cli_here(["bench", "--model-config", bad, "--device", "cpu"]),
           f"--model-config {bad}: not valid JSON")


@pytest.mark.parametrize("change, field", [
    ({"depth": 0}, "depth must be a positive integer, got 0"),
    ({"num_heads": 5}, "embed_dim 64 is not divisible by num_heads 5"),
    ({"patch_size": 0}, "patch_size must be a positive integer, got 0"),
    ({"embed_dim": -64}, "embed_dim must be a positive integer, got -64"),
    ({"ffn_hidden": 0}, "ffn_hidden must be a positive integer, got 0"),
    ({"ln_eps": 0}, "ln_eps must be a positive number"),
    ({"depth": 2.5}, "depth must be a positive integer, got 2.5"),
    ({"block_chunks": -1}, "block_chunks must be an integer >= 0"),
])
def test_nonsense_spec_names_file_and_field(tmp_path, change, field):
    spec = json.loads(SPEC.read_text())
    spec.update(change)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    _usage(cli_here(["bench", "--model-config", path, "--device", "cpu"]), str(path), field)


# --- memory check ---------------------------------------------------------------------------

def test_check_fits_refuses_need_above_available():
    need = MemoryNeed(weights=30_000_000_000, activations=2_000_000_000, bytes_per_param=4)
    with pytest.raises(UsageError, match=r"m does not fit .* on here: it needs about 32\.0 GB "
                                         r"\(30\.0 GB of weights at 4 bytes per parameter \+ "
                                         r"2\.0 GB .*\), 31\.0 GB is available\. do this"):
        check_fits(need, 31_000_000_000, model="m", where="here", advice="do this")
    check_fits(need, 32_000_000_000, model="m", where="here", advice="do this")   # fits
    check_fits(need, None, model="m", where="here", advice="do this")   # unknown: no check


def test_memory_need_counts_weights_in_their_dtype_and_the_batch():
    spec = resolve("dino7b-full8b-378").record.arch
    fp32 = bench_memory_need(spec, 378, 16, "fp32", 4, attention_matrix=True)
    bf16 = bench_memory_need(spec, 378, 16, "bf16", 2, attention_matrix=False)
    assert fp32.weights == 4 * param_count(spec) > 25e9
    assert bf16.weights == 2 * param_count(spec)
    assert 0 < bf16.activations < fp32.activations
    one = bench_memory_need(spec, 378, 1, "fp32", 4, attention_matrix=True)
    assert fp32.activations == 16 * one.activations


def _limit_address_space():   # without the check the model would allocate: fail fast instead
    resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))


def test_dino7b_fp32_on_cpu_is_refused_before_allocating():
    spec = resolve("dino7b-full8b-378").record.arch
    need = bench_memory_need(spec, 378, 16, "fp32", 4, attention_matrix=True)
    avail = host_available_bytes()
    if avail is None or avail >= need.total:
        pytest.skip(f"this machine has {avail} bytes free, enough for dino7b in fp32")
    r = subprocess.run([WEBSSL, "bench", "--model", "dino7b-full8b-378", "--device", "cpu",
                        "--precision", "fp32"], capture_output=True, text=True, timeout=180,
                       env=child_env({}), preexec_fn=_limit_address_space)
    _usage(r, "dino7b-full8b-378 at 378px, batch 16, fp32 does not fit", "of weights at 4 bytes",
           "is available", "smaller model")
