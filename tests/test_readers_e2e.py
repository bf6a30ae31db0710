"""Input problems seen through ``webssl extract`` (tiny fixture model, CPU): an empty shard
fails its unit only (exit 3, recorded), and an output folder inside the input folder is not
read back as input on the next run."""
from __future__ import annotations

import json

from tests.extract_helpers import cli_args
from tests.helpers import images as gen
from tests.helpers.cli import cli_here


def test_empty_shard_fails_its_unit_and_the_others_are_written(tmp_path):
    gen.write_shards(tmp_path / "wds", 1, 3)
    (tmp_path / "wds" / "shard-000001.tar").write_bytes(b"")
    out = tmp_path / "out"
    got = cli_here(cli_args([tmp_path / "wds"], out, "--num-workers", "1"))
    assert got.returncode == 3, got.stderr
    assert (out / "part-000000.parquet").exists() and not (out / "part-000001.parquet").exists()
    (record,) = [json.loads(p.read_text()) for p in (out / "_webssl" / "failed_units").glob("*.json")]
    assert "empty (0 bytes)" in record["reason"]


def test_output_inside_the_input_folder_is_skipped_on_the_next_run(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(2):
        (root / f"{i}.jpg").write_bytes(gen.make_jpeg(20, 20, seed=i))
    out = root / "feats"
    for _ in range(2):
        got = cli_here(cli_args([root], out, "--num-workers", "1"))
        assert got.returncode == 0, got.stderr
