"""Planning local inputs: what counts as a list file (UTF-8, BOM or not), lists of shards or
parquet files, webssl's own output folders inside an input folder, clear "mixes" errors; and
unique parquet keys from a --key-column with repeats and nulls."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import images as gen
from webssl_cli.config import InputConfig, PreprocessConfig
from webssl_cli.errors import UsageError
from webssl_cli.preprocess import DecodeError, load_sample
from webssl_cli.readers import iter_samples, plan_units


def cfg(*inputs, **kw) -> InputConfig:
    return InputConfig(inputs=tuple(str(i) for i in inputs), **kw)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_only_txt_lst_list_files_are_lists(tmp_path):
    write(tmp_path / "a.jpg", gen.make_jpeg(8, 8))
    notes = write(tmp_path / "notes.md", b"a.jpg\n")
    with pytest.raises(UsageError, match=r"notes.md: unknown input kind.*\(\.txt, \.lst, \.list\)"):
        plan_units(cfg(notes))
    for name in ("x.LST", "y.list", "z.Txt"):
        lst = write(tmp_path / name, b"a.jpg\n")
        (unit,) = plan_units(cfg(lst))
        assert unit.items == (str(tmp_path / "a.jpg"),)


def test_a_list_with_a_byte_order_mark(tmp_path):
    write(tmp_path / "a.jpg", gen.make_jpeg(8, 8))
    lst = write(tmp_path / "l.txt", "\ufeffa.jpg\n".encode("utf-8"))
    c = cfg(lst)
    (s,) = [s for u in plan_units(c) for s in iter_samples(u, c)]
    assert s.key == "a.jpg" and s.data == (tmp_path / "a.jpg").read_bytes()


def test_lists_of_parquet_files_are_read_as_parquet_and_mixed_lists_are_refused(tmp_path):
    imgs = [gen.make_png(8, 8, seed=i) for i in range(3)]
    pq_path = gen.write_parquet(tmp_path / "t.parquet", imgs)
    (shard,) = gen.write_shards(tmp_path / "wds", 1, 2)
    c = cfg(write(tmp_path / "pq.txt", b"t.parquet\n"))
    units = plan_units(c)
    assert [u.kind for u in units] == ["parquet"]
    assert [s.data for u in units for s in iter_samples(u, c)] == imgs
    both = write(tmp_path / "both.txt", f"{pq_path}\n{shard}\n".encode())
    assert [u.kind for u in plan_units(cfg(both))] == ["parquet", "tar"]
    write(tmp_path / "a.jpg", gen.make_jpeg(8, 8))
    mixed = write(tmp_path / "mixed.txt", f"a.jpg\n{shard}\n".encode())
    with pytest.raises(UsageError, match=r"mixed.txt: the list mixes image files \(first: "
                                         rf".*a.jpg\) with .*\(first: {shard}\)") as info:
        plan_units(cfg(mixed))
    assert info.value.exit_code == 2


def test_mixes_message_names_the_first_file_of_each_kind(tmp_path):
    write(tmp_path / "d" / "b.jpg", gen.make_jpeg(8, 8))
    write(tmp_path / "d" / "a.jpg", gen.make_jpeg(8, 8))
    gen.write_parquet(tmp_path / "d" / "sub" / "x.parquet", [b"1"])
    with pytest.raises(UsageError, match=r"2 images \(first: .*d/a.jpg\) with 0 tar shards and "
                                         r"1 parquet files \(first: .*d/sub/x.parquet\)"):
        plan_units(cfg(tmp_path / "d"))


def test_webssl_output_folders_inside_an_input_folder_are_skipped(tmp_path, caplog):
    root = tmp_path / "photos"
    write(root / "a.jpg", gen.make_jpeg(8, 8))
    for out, manifest in (("feats", "_webssl"), ("more/feats2", "custom")):
        gen.write_parquet(root / out / "part-000000.parquet", [b"1"])
        write(root / out / "metadata" / "000000.parquet", b"x")
        write(root / out / manifest / "run.json",
              json.dumps({"fields": {}, "fingerprint": "f", "run_id": "r"}).encode())
    write(root / "other" / "run.json", b'{"not": "ours"}')     # not a webssl manifest
    write(root / "other" / "z.jpg", gen.make_jpeg(8, 8))
    with caplog.at_level("INFO", logger="webssl.readers"):
        (unit,) = plan_units(cfg(root))
    assert unit.items == (str(root / "a.jpg"), str(root / "other" / "z.jpg"))
    assert "feats: skipped, a webssl output folder (it holds _webssl/run.json)" in caplog.text
    assert "feats2: skipped" in caplog.text


def test_parquet_keys_stay_unique_with_repeats_nulls_and_parts(tmp_path):
    imgs = [gen.make_png(8, 8, seed=i) for i in range(8)]
    keys = ["k", "k", "k#2", None, "p-000000/4", "k", None, "p-000000/3"]
    path = gen.write_parquet(tmp_path / "p.parquet", imgs, keys=keys, row_group_size=3)
    c = cfg(path, key_column="key")
    (unit,) = plan_units(c)
    got = [s.key for s in iter_samples(unit, c)]
    assert got == ["k", "k#3", "k#2", "p-000000/3#2", "p-000000/4", "k#4", "p-000000/6",
                   "p-000000/3"]
    parts = sorted((s.index, s.key) for k in range(3) for s in iter_samples(unit, c, k, 3))
    assert [key for _, key in parts] == got
    c2 = cfg(path, key_column="key", shard_size=5)      # a repeat in another unit
    second = [s.key for s in iter_samples(plan_units(c2)[1], c2)]
    assert second == ["k", "p-000001/6", "p-000000/3"]


def test_decompression_bomb_message_names_the_option():
    with pytest.raises(DecodeError) as info:
        load_sample(gen.make_png(64, 48), PreprocessConfig(224, max_image_pixels=100))
    assert "--max-image-pixels" in info.value.message
    assert "PreprocessConfig.max_image_pixels" in info.value.message
