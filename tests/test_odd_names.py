"""File, folder, shard and tar member names whose bytes are not UTF-8 (Latin-1 names from an
old archive: ``b'caf\\xe9.jpg'``, which Python holds as ``'caf\\udce9.jpg'``). Such a sample is
read from its real path like any other; its key and source are written with the undecodable
bytes escaped as ``\\xNN`` (valid UTF-8 everywhere: Parquet, NPY metadata, the ledger), and the
plan keeps the real path, so a rerun resumes. Names are made from bytes, so these tests hold
whatever the file system encoding of the test machine."""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

import webssl_cli
from tests.extract_helpers import cli_args, config
from tests.helpers import images as gen
from tests.helpers.cli import cli_here
from webssl_cli.config import InputConfig
from webssl_cli.readers import iter_samples, plan_units
from webssl_cli.store import OutputLayout, load_plan
from webssl_cli.units import escape_undecodable, unescape_undecodable

CAFE = b"caf\xe9.jpg"                 # Latin-1 "café.jpg": not UTF-8
CAFE_KEY = "caf\\xe9.jpg"             # its key: backslash, x, e, 9


def bpath(folder: Path | str, *names: bytes) -> str:
    """A str path (surrogate-escaped, as os.walk gives it) of ``folder``/``names``."""
    return os.fsdecode(os.path.join(os.fsencode(str(folder)), *names))


def put(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def table(out: Path):
    return ds.dataset(str(out), format="parquet").to_table()


def utf8_files(out: Path) -> list[Path]:
    """Every JSON/JSONL file of the output; each must decode as strict UTF-8."""
    files = [p for p in Path(out).rglob("*") if p.suffix in (".json", ".jsonl")]
    for p in files:
        p.read_bytes().decode("utf-8")
    return files


def test_the_escape_rule_and_its_inverse():
    name = os.fsdecode(CAFE)
    assert name == "caf\udce9.jpg"
    assert escape_undecodable(name) == CAFE_KEY == \
        name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    assert os.fsencode(unescape_undecodable(CAFE_KEY)) == CAFE
    for fine in ("a.jpg", "café ☕.jpg", "back\\slash.jpg"):
        assert escape_undecodable(fine) == fine == unescape_undecodable(fine)


def test_folder_with_an_undecodable_file_name_cli_and_resume(tmp_path):
    """The QA repro: the plan could not be written (UnicodeEncodeError, exit 1, nothing
    extracted). Now the image is extracted, keyed by the escaped name, and a rerun resumes."""
    folder = tmp_path / "imgs"
    same = gen.make_jpeg(24, 24, seed=3)
    put(bpath(folder, CAFE), same)
    put(bpath(folder, b"plain.jpg"), same)                       # the same bytes, for the row check
    put(bpath(folder, "café ☕.jpg".encode()), gen.make_jpeg(24, 24, seed=4))
    out = tmp_path / "out"
    got = cli_here(cli_args([folder], out, "--num-workers", "1"))
    assert got.returncode == 0, got.stderr
    keys, feats = webssl_cli.read_features(out)
    assert sorted(keys) == sorted([CAFE_KEY, "plain.jpg", "café ☕.jpg"])
    np.testing.assert_array_equal(feats[keys.index(CAFE_KEY)], feats[keys.index("plain.jpg")])
    rows = table(out).select(["key", "source"]).to_pylist()
    assert {"key": CAFE_KEY, "source": str(folder) + "/" + CAFE_KEY} in rows
    utf8_files(out)
    # the plan holds the real path, so a resume re-plans to the same units and does nothing
    (unit,) = load_plan(OutputLayout(out))
    assert bpath(folder, CAFE) in unit.items
    done = {p: p.read_bytes() for p in (out / "_webssl" / "done").glob("*.json")}
    again = cli_here(cli_args([folder], out, "--num-workers", "1"))
    assert again.returncode == 0, again.stderr
    assert "warning" not in again.stderr.lower()       # no "inputs the plan lacks" either
    assert {p: p.read_bytes() for p in (out / "_webssl" / "done").glob("*.json")} == done
    assert webssl_cli.read_features(out)[0] == keys


def test_undecodable_folder_and_list_file_npy_with_a_failure_in_the_ledger(tmp_path):
    """(c) the input folder's own name is not UTF-8 (its unit source, the run config and the
    done-record hold it); (a) a list file in Latin-1 names such files (it was refused as 'not
    a UTF-8 text list'); a broken image with such a name is in the ledger under its escaped
    key."""
    folder = bpath(tmp_path, b"fotos\xe9")
    put(os.path.join(folder, os.fsdecode(CAFE)), gen.make_jpeg(24, 24, seed=1))
    put(os.path.join(folder, os.fsdecode(b"bad\xff.jpg")), b"not an image at all")
    listed = put(bpath(tmp_path, b"list", b"\xe0.jpg"), gen.make_jpeg(24, 24, seed=2))
    lst = put(bpath(tmp_path, b"list", b"l.txt"), b"\xe0.jpg\n")
    out = tmp_path / "out"
    result = webssl_cli.extract(config([folder, lst], out, fmt="npy", workers=0))
    assert result.exit_code == 0
    keys, feats = webssl_cli.read_features(out)
    # two key roots: keys are relative to their common parent, tmp_path
    assert sorted(keys) == ["fotos\\xe9/" + CAFE_KEY, "list/\\xe0.jpg"] and feats.shape[0] == 2
    meta = ds.dataset(str(out / "metadata"), format="parquet").to_table().to_pylist()
    assert {m["source"] for m in meta} == {escape_undecodable(os.path.join(folder, "caf\udce9.jpg")),
                                           escape_undecodable(listed)}
    (ledger,) = (out / "_webssl" / "failures").glob("*.jsonl")
    (row,) = [json.loads(line) for line in ledger.read_text(encoding="utf-8").splitlines()]
    assert row["key"] == "fotos\\xe9/bad\\xff.jpg" and row["stage"] == "decode"
    assert row["source"] == escape_undecodable(folder) + "/bad\\xff.jpg"
    assert any("fotos" in p.read_text(encoding="utf-8") for p in utf8_files(out))
    again = webssl_cli.extract(config([folder, lst], out, fmt="npy", workers=0))
    assert again.exit_code == 0 and webssl_cli.read_features(out)[0] == keys


def _shard(path: str, members: list[tuple[bytes, bytes]], fmt: int) -> str:
    """A tar shard at ``path`` with members (raw name bytes, data), in tarfile ``fmt``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return put(path, buf.getvalue())


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_member_names_that_are_not_utf8_stay_distinct(tmp_path, fmt):
    """They were decoded with U+FFFD: two names differing in one such byte collided (the
    second got '#2') and neither could be told back."""
    shard = _shard(str(tmp_path / "s.tar"), [(b"a\xe9.jpg", gen.make_jpeg(8, 8)),
                                             (b"a\xe8.jpg", gen.make_jpeg(8, 8, seed=1)),
                                             (b"a\\xe9.jpg", gen.make_jpeg(8, 8, seed=2))], fmt)
    c = InputConfig((shard,))
    (unit,) = plan_units(c)
    samples = list(iter_samples(unit, c))
    assert [s.key for s in samples] == ["s/a\\xe9", "s/a\\xe8", "s/a\\xe9#2"]
    assert all(s.data for s in samples)


def test_tar_shard_and_members_with_undecodable_names_cli(tmp_path):
    """(b)+(c) an undecodable shard file name (its unit source) and member names, in GNU and
    PAX shards, with --keep-json and a sidecar holding a lone-surrogate escape."""
    wds = tmp_path / "wds"
    img = gen.make_jpeg(24, 24, seed=5)
    side = b'{"title": "\\udce9t\\u00e9"}'
    _shard(bpath(wds, b"gnu\xe9.tar"), [(b"caf\xe9.jpg", img), (b"caf\xe9.json", side),
                                        (b"ok.jpg", img)], tarfile.GNU_FORMAT)
    _shard(bpath(wds, b"pax.tar"), [(b"caf\xe9.jpg", img), (b"caf\xe9.json", side)],
           tarfile.PAX_FORMAT)
    out = tmp_path / "out"
    got = cli_here(cli_args([wds], out, "--num-workers", "1", "--keep-json"))
    assert got.returncode == 0, got.stderr
    keys, _ = webssl_cli.read_features(out)
    assert sorted(keys) == ["gnu_/caf\\xe9", "gnu_/ok", "pax/caf\\xe9"]
    rows = table(out).select(["key", "source", "json"]).to_pylist()
    by_key = {r["key"]: r for r in rows}
    assert by_key["gnu_/caf\\xe9"]["source"] == str(wds) + "/gnu\\xe9.tar"
    assert json.loads(by_key["pax/caf\\xe9"]["json"]) == {"title": "\udce9t\u00e9"}
    utf8_files(out)
    again = cli_here(cli_args([wds], out, "--num-workers", "1", "--keep-json"))
    assert again.returncode == 0, again.stderr


def test_a_real_name_equal_to_an_escaped_one_keeps_its_key(tmp_path):
    """The escape is ambiguous only for a name that literally holds ``\\xNN``: that file keeps
    its key and the undecodable one gets '#2', in every part of the unit."""
    folder = tmp_path / "d"
    put(bpath(folder, CAFE), gen.make_jpeg(8, 8))
    put(bpath(folder, CAFE_KEY.encode()), gen.make_jpeg(8, 8, seed=1))
    c = InputConfig((str(folder),))
    (unit,) = plan_units(c)
    whole = {s.index: s.key for s in iter_samples(unit, c)}
    parts = {s.index: s.key for p in range(2) for s in iter_samples(unit, c, p, 2)}
    assert whole == parts and sorted(whole.values()) == [CAFE_KEY, CAFE_KEY + "#2"]
    by_item = {unit.items[i]: key for i, key in whole.items()}
    assert by_item[bpath(folder, CAFE_KEY.encode())] == CAFE_KEY
    assert by_item[bpath(folder, CAFE)] == CAFE_KEY + "#2"


def test_parquet_file_with_an_undecodable_name(tmp_path):
    """pyarrow cannot open such a path (it encodes it as UTF-8): it was refused at planning."""
    imgs = [gen.make_png(8, 8, seed=i) for i in range(2)]
    real = gen.write_parquet(tmp_path / "t.parquet", imgs)
    odd = bpath(tmp_path, b"t\xe9.parquet")
    os.rename(real, odd)
    c = InputConfig((odd,))
    (unit,) = plan_units(c)
    samples = list(iter_samples(unit, c))
    assert [s.data for s in samples] == imgs
    assert {s.source for s in samples} == {str(tmp_path) + "/t\\xe9.parquet"}


def test_a_given_up_shard_with_an_undecodable_name_is_shown_escaped(tmp_path):
    """`webssl status` and the end-of-run message show the shard as keys show names
    (`gnu\\xe9.tar`), not as a lone surrogate (printed as U+FFFD)."""
    from webssl_cli.store import get_status
    good = gen.write_shards(tmp_path / "src", 1, 4)[0]
    shard = put(bpath(tmp_path / "in", b"gnu\xe9.tar"), good.read_bytes()[:3000])  # truncated
    out = tmp_path / "out"
    r = cli_here(cli_args([shard], out, "--num-workers", "0"))
    assert r.returncode == 3, r.stderr
    (failed,) = get_status(out).failed_units
    assert failed.source.endswith("gnu\\xe9.tar") and "\udce9" not in failed.reason
    assert "gnu\\xe9.tar" in cli_here(["status", str(out)]).stdout
