"""Readers on local inputs: folders, list files, parquet, WebDataset tar shards (file, folder,
glob, braces, pipe:), with real files and real shards written by webdataset.TarWriter."""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.helpers import images as gen
from webssl_cli.config import InputConfig
from webssl_cli.errors import UsageError
from webssl_cli.readers import ReadError, iter_samples, plan_units
from webssl_cli.units import Unit


def cfg(*inputs, **kw) -> InputConfig:
    return InputConfig(inputs=tuple(str(i) for i in inputs), **kw)


def read_all(units, c):
    return [s for u in units for s in iter_samples(u, c)]


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    return gen.write_shards(tmp_path_factory.mktemp("wds"), n_shards=3, per_shard=5)


# --- folders ----------------------------------------------------------------------------------

def test_folder_is_recursive_sorted_any_case_and_cut_into_units(tmp_path, caplog):
    root = tmp_path / "photos"
    names = ["b/IMG_1.JPG", "a.jpeg", "b/c/x.Png", "z.webp", "y.bmp", "g.gif", "t.TIF", "u.tiff",
             "j.jfif", "k.JPE"]
    for i, name in enumerate(names):
        write(root / name, gen.make_jpeg(32, 24, seed=i))
    write(root / "notes.txt", b"hello")
    write(root / "b" / "meta.json", b"{}")
    for name in ("p.HEIC", "q.heic", "r.jp2"):        # image types that are not decoded
        write(root / name, b"...")
    with caplog.at_level("WARNING", logger="webssl.readers"):
        units = plan_units(cfg(root, shard_size=4))
    assert "2 .heic files, 1 .jp2 file not read" in caplog.text
    assert [u.name for u in units] == ["photos-000000", "photos-000001", "photos-000002"]
    assert [u.index for u in units] == [0, 1, 2] and all(u.kind == "files" for u in units)
    keys = [s.key for s in read_all(units, cfg(root))]
    assert keys == sorted(names)
    assert all(u.source == str(root) + "/" for u in units)
    assert [u.expected_size for u in units] == [4, 4, 2]


def test_symlink_loop_does_not_hang_or_duplicate(tmp_path):
    root = tmp_path / "imgs"
    write(root / "sub" / "a.jpg", gen.make_jpeg(16, 16))
    os.symlink(root, root / "sub" / "loop")
    os.symlink(root / "sub", root / "again")
    units = plan_units(cfg(root))
    items = [i for u in units for i in u.items]
    assert len(items) == 1 and items[0].endswith("a.jpg")


def test_plan_is_deterministic(tmp_path):
    root = tmp_path / "d"
    for i in range(12):
        write(root / f"{(i * 7) % 12:02d}" / f"{i}.png", gen.make_png(8, 8))
    assert plan_units(cfg(root, shard_size=5)) == plan_units(cfg(root, shard_size=5))


def test_options_of_an_input_kind_that_no_input_is_are_refused(tmp_path, shards):
    """--image-column on a folder of images changes nothing, yet would be recorded in the
    run's settings (and refuse the rerun without it): exit 2 naming it. Given with an input
    of its kind among others, it is accepted."""
    write(tmp_path / "imgs" / "a.jpg", gen.make_jpeg(8, 8))
    pq = gen.write_parquet(tmp_path / "p.parquet", [gen.make_jpeg(8, 8)])
    for kw, option in (({"image_column": "img"}, "--image-column"),
                       ({"key_column": "k"}, "--key-column"),
                       ({"image_key": "png"}, "--image-key"), ({"keep_json": True}, "--keep-json")):
        with pytest.raises(UsageError, match=f"{option} applies to .* inputs, and none"):
            plan_units(cfg(tmp_path / "imgs", **kw))
    assert len(plan_units(cfg(tmp_path / "imgs", shards[0], image_key="png"))) == 2
    assert len(plan_units(cfg(tmp_path / "imgs", pq, image_column="image"))) == 2


def test_a_list_naming_a_file_twice_says_so_once_naming_the_list(tmp_path, caplog):
    write(tmp_path / "a.jpg", gen.make_jpeg(8, 8))
    lst = write(tmp_path / "l.txt", b"a.jpg\n./a.jpg\n")
    with caplog.at_level("WARNING", logger="webssl.readers"):
        (unit,) = plan_units(cfg(lst))
    assert unit.items == (str(tmp_path / "a.jpg"),)
    assert f"--input {lst}: 1 entry repeats a file already in the run and is read once" \
        in caplog.text


@pytest.mark.parametrize("case, match", [
    ("missing", "no such file or folder"),
    ("empty_dir", "no images"),
    ("binary", "unknown input kind"),
    ("empty_list", "the list is empty"),
    ("mixed", "mixes"),
    ("empty_glob", "matches nothing"),
])
def test_bad_inputs_are_usage_errors_naming_the_input(tmp_path, case, match):
    target = tmp_path / case
    if case == "empty_dir":
        (target / "sub").mkdir(parents=True)
        write(target / "readme.md", b"# nothing")
    elif case == "binary":
        target = write(tmp_path / "blob.bin", b"\x00\x01\x02" * 100)
    elif case == "empty_list":
        target = write(tmp_path / "list.txt", b"# only a comment\n\n")
    elif case == "mixed":
        write(target / "a.jpg", gen.make_jpeg(8, 8))
        write(target / "s.tar", b"x" * 1024)
    elif case == "empty_glob":
        target = tmp_path / "nothing-*.tar"
    with pytest.raises(UsageError, match=match) as info:
        plan_units(cfg(target))
    assert str(target) in str(info.value) and info.value.exit_code == 2


def test_two_folders_with_the_same_file_names_get_unique_keys_and_names(tmp_path):
    for split in ("train", "val"):
        for name in ("0.jpg", "1.jpg"):
            write(tmp_path / split / "images" / name, gen.make_jpeg(8, 8))
    c = cfg(tmp_path / "train" / "images", tmp_path / "val" / "images", tmp_path / "val" / "images")
    units = plan_units(c)
    assert [u.name for u in units] == ["images-000000", "images-000000_2"]
    keys = [s.key for s in read_all(units, c)]
    assert keys == ["train/images/0.jpg", "train/images/1.jpg", "val/images/0.jpg", "val/images/1.jpg"]


def test_inputs_that_reach_a_file_through_a_folder_symlink_read_it_once(tmp_path, shards):
    """``imgs/link -> nested`` with ``--input imgs --input imgs/nested``: one row per file;
    a shard reached through a linked folder too. A file symlink stays a file of its own."""
    write(tmp_path / "imgs" / "nested" / "deep" / "y.png", gen.make_png(8, 8))
    write(tmp_path / "imgs" / "nested" / "z.jpg", gen.make_jpeg(8, 8))
    (tmp_path / "imgs" / "link_dir").symlink_to("nested")
    (tmp_path / "imgs" / "nested" / "alias.jpg").symlink_to("z.jpg")
    c = cfg(tmp_path / "imgs", tmp_path / "imgs" / "nested")
    keys = [s.key for s in read_all(plan_units(c), c)]
    assert keys == ["link_dir/alias.jpg", "link_dir/deep/y.png", "link_dir/z.jpg"]
    (tmp_path / "wds").symlink_to(shards[0].parent)
    units = plan_units(cfg(shards[0], tmp_path / "wds" / shards[0].name))
    assert [u.name for u in units] == ["shard-000000"]


def test_a_fifo_with_an_image_name_is_a_ledger_row_not_a_hang(tmp_path):
    """Opening a FIFO waits for a writer forever: it is recorded as not a regular file;
    a FIFO named as a tar shard is refused at planning, with what to do."""
    write(tmp_path / "imgs" / "a.jpg", gen.make_jpeg(8, 8))
    os.mkfifo(tmp_path / "imgs" / "b.jpg")
    c = cfg(tmp_path / "imgs")
    got = {s.key: s for s in read_all(plan_units(c), c)}
    assert got["a.jpg"].data is not None
    assert got["b.jpg"].data is None and got["b.jpg"].error_type == "NotARegularFile"
    assert "is a FIFO, not a regular file" in got["b.jpg"].error
    os.mkfifo(tmp_path / "s.tar")
    with pytest.raises(UsageError, match="not a regular file.*pipe:cat"):
        plan_units(cfg(tmp_path / "s.tar"))


def test_an_input_folder_gone_or_emptied_after_planning_fails_the_unit(tmp_path):
    """Unmounted mid-run: a folder scan listed its files, now their folder is gone (or, a
    lazily unmounted mount point, empty). The unit fails (a rerun redoes it) instead of being
    written off file by file as FileNotFoundError rows in a unit marked done; with two
    inputs too (the unit's key root, their common parent, is still there). A list's file in
    a missing folder stays a row: lists are not checked at planning."""
    for case in ("removed", "emptied", "one of two"):
        a, b = tmp_path / case / "a", tmp_path / case / "b"
        for i in range(3):
            write(a / f"{i}.jpg", gen.make_jpeg(8, 8, seed=i))
            write(b / f"{i}.jpg", gen.make_jpeg(8, 8, seed=i))
        c = cfg(a, b) if case == "one of two" else cfg(a)
        unit = plan_units(c)[0]
        if case == "emptied":
            for f in a.iterdir():
                f.unlink()
        else:
            shutil.rmtree(a)
        with pytest.raises(ReadError, match=f"input folder {a} is gone or empty"):
            list(iter_samples(unit, c))
    write(tmp_path / "l" / "a.jpg", gen.make_jpeg(8, 8))
    lst = write(tmp_path / "l" / "list.txt", b"a.jpg\nnot/there.jpg\n")
    got = read_all(plan_units(cfg(lst)), cfg(lst))
    assert [s.error_type for s in got] == [None, "FileNotFoundError"]


# --- list files ---------------------------------------------------------------------------

def test_list_file_resolves_relative_paths_and_records_missing_ones(tmp_path):
    write(tmp_path / "data" / "a.jpg", gen.make_jpeg(16, 16))
    write(tmp_path / "data" / "b.png", gen.make_png(16, 16))
    other = write(tmp_path / "elsewhere" / "c.jpg", gen.make_jpeg(16, 16))
    lst = write(tmp_path / "data" / "list.txt",
                f"# my images\nb.png\n\na.jpg\nmissing.jpg\n{other}\n".encode())
    c = cfg(lst, shard_size=10)
    (unit,) = plan_units(c)
    assert unit.kind == "files" and unit.name == "list-000000" and unit.expected_size == 4
    samples = list(iter_samples(unit, c))
    assert [s.index for s in samples] == [0, 1, 2, 3]
    by_key = {s.key: s for s in samples}
    assert set(by_key) == {"a.jpg", "b.png", "missing.jpg", str(other)}
    bad = by_key["missing.jpg"]
    assert bad.data is None and bad.error_type == "FileNotFoundError" and "missing.jpg" in bad.error
    assert by_key["a.jpg"].data == (tmp_path / "data" / "a.jpg").read_bytes()


def test_list_lines_with_blanks_and_hashes_name_the_files_they_are(tmp_path, caplog):
    """Blanks around a line are dropped unless the file's name has them; a '#' line is a
    comment, and a warning says so when a file has that name (``./#name`` reads it)."""
    for name in (" sp.jpg", "tab.jpg", "#hash.jpg", "plain.jpg"):
        write(tmp_path / name, gen.make_jpeg(16, 16))
    lst = write(tmp_path / "list.txt",
                b" sp.jpg\n  tab.jpg \t\n#hash.jpg\n# a comment\n./#hash.jpg\nplain.jpg  \n")
    with caplog.at_level("WARNING", logger="webssl.readers"):
        (unit,) = plan_units(cfg(lst))
    got = {s.key: s for s in iter_samples(unit, cfg(lst))}
    assert sorted(got) == [" sp.jpg", "#hash.jpg", "plain.jpg", "tab.jpg"]
    assert all(s.data == (tmp_path / k).read_bytes() for k, s in got.items())
    assert "line 3 (of 1 such lines) starts with '#'" in caplog.text


def test_list_of_shards_is_a_list_of_tar_units(tmp_path, shards):
    lst = write(tmp_path / "shards.txt", "\n".join(str(p) for p in shards[:2]).encode())
    units = plan_units(cfg(lst))
    assert [(u.kind, u.name) for u in units] == [("tar", "shard-000000"), ("tar", "shard-000001")]


def test_files_units_split_into_parts(tmp_path):
    for i in range(7):
        write(tmp_path / "p" / f"{i}.jpg", gen.make_jpeg(8, 8, seed=i))
    c = cfg(tmp_path / "p")
    (unit,) = plan_units(c)
    parts = [[s.index for s in iter_samples(unit, c, part=k, n_parts=3)] for k in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    with pytest.raises(ValueError):
        list(iter_samples(unit, c, part=3, n_parts=3))


# --- parquet ------------------------------------------------------------------------------

def test_parquet_rows_are_cut_and_read_across_row_groups(tmp_path):
    imgs = [gen.make_jpeg(16 + i, 16, seed=i) for i in range(23)]
    imgs[9] = None
    path = gen.write_parquet(tmp_path / "train-00000.parquet", imgs, row_group_size=7)
    c = cfg(path, shard_size=10)
    units = plan_units(c)
    assert [(u.kind, u.name, u.row_range) for u in units] == [
        ("parquet", "train-00000-000000", (0, 10)), ("parquet", "train-00000-000001", (10, 20)),
        ("parquet", "train-00000-000002", (20, 23))]
    samples = read_all(units, c)
    assert [s.key for s in samples][:2] == ["train-00000-000000/0", "train-00000-000000/1"]
    assert samples[12].key == "train-00000-000001/12" and samples[12].index == 2
    assert samples[12].data == imgs[12]
    assert samples[9].data is None and samples[9].error_type == "MissingImage"
    assert len(samples) == 23
    parts = [[s.index for s in iter_samples(units[1], c, k, 2)] for k in range(2)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]]     # rows 10-13 and 14-19: by row group


def test_parquet_hf_struct_and_key_column(tmp_path):
    imgs = [gen.make_png(10, 10, seed=i) for i in range(4)]
    path = gen.write_parquet(tmp_path / "hf.parquet", imgs + [None], hf_struct=True,
                             keys=[f"k{i}" for i in range(5)])
    c = cfg(path, key_column="key")
    samples = read_all(plan_units(c), c)
    assert [s.key for s in samples] == ["k0", "k1", "k2", "k3", "k4"]
    assert [s.data for s in samples[:4]] == imgs and samples[4].error_type == "MissingImage"


def test_parquet_without_an_image_column_names_the_columns(tmp_path):
    path = gen.write_parquet(tmp_path / "p.parquet", [b"x", b"y"], column="blob")
    path2 = tmp_path / "text.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"url": ["a", "b"], "caption": ["c", "d"]}), path2)
    with pytest.raises(UsageError, match=r"columns: url \(string\), caption \(string\)"
                       r".*image bytes only") as info:
        plan_units(cfg(path2))
    assert "--image-column" not in str(info.value)       # no column could ever be named
    with pytest.raises(UsageError, match="--image-column 'photo' does not exist; columns: "
                                         r"blob \(binary\)"):
        plan_units(cfg(path, image_column="photo"))
    with pytest.raises(UsageError, match="--image-column 'caption' is not a binary.*image bytes only"):
        plan_units(cfg(path, image_column="caption"))
    with pytest.raises(UsageError, match="--key-column 'id'"):
        plan_units(cfg(path, key_column="id"))
    c = cfg(path, image_column="blob")      # found by name; auto-detection finds it too
    assert [s.data for s in read_all(plan_units(c), c)] == [b"x", b"y"]


def test_corrupt_parquet_is_a_usage_error_at_plan(tmp_path):
    bad = write(tmp_path / "bad.parquet", b"PAR1 not really")
    with pytest.raises(UsageError, match="cannot read parquet"):
        plan_units(cfg(bad))


# --- tar shards -----------------------------------------------------------------------------

def test_tar_file_folder_glob_and_braces_plan_the_same_shards(tmp_path, shards):
    folder = shards[0].parent
    expect = [("tar", str(p), p.stem) for p in shards]
    for spec in (folder, folder / "*.tar", folder / "shard-{000000..000002}.tar"):
        units = plan_units(cfg(spec))
        assert [(u.kind, u.source, u.name) for u in units] == expect
    assert len(plan_units(cfg(*shards))) == 3
    with pytest.raises(UsageError, match="1 of 4 names do not exist"):
        plan_units(cfg(folder / "shard-{000000..000003}.tar"))


def test_tar_samples_keys_json_and_images(shards):
    c = cfg(shards[0], keep_json=True)
    (unit,) = plan_units(c)
    samples = list(iter_samples(unit, c))
    assert [s.key for s in samples] == [f"shard-000000/s00_{j:05d}" for j in range(5)]
    assert [s.index for s in samples] == list(range(5))
    assert all(s.data and s.source == str(shards[0]) for s in samples)
    assert samples[2].meta == {"caption": "photo 0/2", "n": 2}
    plain = list(iter_samples(unit, cfg(shards[0])))
    assert all(s.meta is None for s in plain)
    assert [s.data for s in plain] == [s.data for s in samples]


def test_tar_members_without_image_duplicates_and_image_key(tmp_path):
    png, jpg = gen.make_png(12, 12), gen.make_jpeg(12, 12)
    extra = {0: [{"__key__": "onlytext", "txt": "no image here"},
                 {"__key__": "both", "png": png, "jpg": jpg, "json": b"[1, 2]"},
                 {"__key__": "badjson", "jpg": jpg, "json": b"{oops"},
                 {"__key__": "s00_00000", "jpg": jpg},        # repeats the first key
                 {"__key__": "nan", "jpg": jpg, "json": b'{"x": NaN}'},
                 {"__key__": "huge", "jpg": jpg, "json": b'{"x": 1e400}'}]}
    (shard,) = gen.write_shards(tmp_path, 1, 1, extra=extra)
    c = cfg(shard, keep_json=True)
    samples = list(iter_samples(plan_units(c)[0], c))
    keys = [s.key for s in samples]
    assert keys == ["shard-000000/s00_00000", "shard-000000/onlytext", "shard-000000/both",
                    "shard-000000/badjson", "shard-000000/s00_00000#2", "shard-000000/nan",
                    "shard-000000/huge"]
    nothing = samples[1]
    assert nothing.data is None and nothing.error_type == "NoImage" and "txt" in nothing.error
    assert samples[2].data == jpg and samples[2].meta == {"json": [1, 2]}
    assert "json_error" in samples[3].meta and samples[3].data == jpg
    assert "NaN is not JSON" in samples[5].meta["json_error"]      # strict JSON only: the
    assert "1e400" in samples[6].meta["json_error"]                # output column stays JSON
    by_png = list(iter_samples(plan_units(c)[0], cfg(shard, image_key="png")))
    assert by_png[2].data == png and by_png[3].error_type == "NoImage"


def test_tar_members_repeated_next_to_each_other_are_separate_samples(tmp_path):
    """``x.jpg`` twice in a row, or ``y.jpg`` then ``y.JPG``: each image is its own sample
    (``#2``), none dropped; a repeated member that is not wanted (``.txt``) splits nothing."""
    images = [gen.make_jpeg(8 + i, 8) for i in range(7)]
    names = ["x.jpg", "x.jpg", "y.jpg", "y.JPG", "z.jpg", "z.txt", "z.txt", "q.jpg", "z.jpg"]
    shard = tmp_path / "d.tar"
    with tarfile.open(shard, "w") as tf:
        it = iter(images)
        for name in names:
            data = b"text" if name.endswith(".txt") else next(it)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    got = read_all(plan_units(cfg(shard)), cfg(shard))
    assert [s.key for s in got] == ["d/x", "d/x#2", "d/y", "d/y#2", "d/z", "d/q", "d/z#2"]
    assert [s.data for s in got] == images


def test_truncated_tar_raises_read_error_after_the_complete_samples(tmp_path, shards):
    data = shards[1].read_bytes()
    cut = write(tmp_path / "cut.tar", data[: len(data) // 2])
    c = cfg(cut)
    (unit,) = plan_units(c)
    got = []
    with pytest.raises(ReadError) as info:
        for s in iter_samples(unit, c):
            got.append(s)
    full = list(iter_samples(plan_units(cfg(shards[1]))[0], cfg(shards[1])))
    assert 0 < len(got) < len(full)
    assert [s.data for s in got] == [s.data for s in full[: len(got)]]
    assert info.value.unit == unit and "truncated" in str(info.value) and str(cut) in str(info.value)
    # cut exactly at a member boundary: still an error (no end-of-archive marker)
    with tarfile.open(shards[1]) as tf:
        boundary = tf.getmembers()[3].offset          # right after the 3rd member
    at_boundary = write(tmp_path / "boundary.tar", data[:boundary])
    with pytest.raises(ReadError, match="end-of-archive"):
        list(iter_samples(plan_units(cfg(at_boundary))[0], cfg(at_boundary)))


def test_garbage_and_gzip_tars(tmp_path, shards):
    junk = write(tmp_path / "junk.tar", b"definitely not a tar archive " * 40)
    with pytest.raises(ReadError, match="not a tar"):
        list(iter_samples(plan_units(cfg(junk))[0], cfg(junk)))
    tgz = write(tmp_path / "z.tar.gz", gzip.compress(shards[2].read_bytes()))
    (unit,) = plan_units(cfg(tgz))
    assert unit.name == "z"
    assert len(list(iter_samples(unit, cfg(tgz)))) == 5
    with pytest.raises(ValueError, match="cannot be read in parts"):
        list(iter_samples(unit, cfg(tgz), part=0, n_parts=2))


def test_pipe_commands_read_like_files_and_report_failures(tmp_path, shards):
    folder = shards[0].parent
    spec = f"pipe:cat {folder}/shard-{{000000..000001}}.tar"
    c = cfg(spec)
    units = plan_units(c)
    assert [(u.kind, u.name) for u in units] == [("tar", "shard-000000"), ("tar", "shard-000001")]
    assert units[0].source == f"pipe:cat {folder}/shard-000000.tar"
    piped = read_all(units, c)
    direct = read_all(plan_units(cfg(*shards[:2])), cfg(*shards[:2]))
    assert [(s.key, s.data) for s in piped] == [(s.key, s.data) for s in direct]
    bad = cfg(f"pipe:cat {tmp_path}/absent.tar")
    with pytest.raises(ReadError, match="exited with status 1"):
        list(iter_samples(plan_units(bad)[0], bad))
    half = cfg(f"pipe:head -c 3000 {shards[0]}")
    with pytest.raises(ReadError):
        list(iter_samples(plan_units(half)[0], half))


def test_concatenated_archives_are_all_read_and_trailing_junk_fails(tmp_path, shards):
    """``cat a.tar b.tar``: both archives are read (as ``tar --ignore-zeros`` does), as a
    local file, through ``pipe:``, and gzipped; keys that repeat get ``#2``. Data after the
    end that is not a tar header fails the unit instead of being skipped."""
    a, b = shards[0].read_bytes(), shards[1].read_bytes()
    joined = write(tmp_path / "ab.tar", a + b)
    expected = [s.data for s in read_all(plan_units(cfg(*shards[:2])), cfg(*shards[:2]))]
    for spec in (joined, f"pipe:cat {shards[0]} {shards[1]}",
                 f"pipe:cat {shards[0]} {shards[1]} | gzip"):
        got = read_all(plan_units(cfg(spec)), cfg(spec))
        assert [s.data for s in got] == expected, spec
        keys = [s.key.split("/", 1)[1] for s in got]
        assert len(set(keys)) == len(keys) == 10
    twice = write(tmp_path / "aa.tar", a + a)
    keys = [s.key for s in read_all(plan_units(cfg(twice)), cfg(twice))]
    assert keys[5:] == [k + "#2" for k in keys[:5]]
    for tail, match in ((b"junk\n", "after the end-of-archive marker, is not a tar header"),
                        (b"\x00" * 1024 + b"junk" + b"\x00" * 508, "is not a tar header"),
                        (a[:700], "truncated")):     # a second archive cut short
        bad = write(tmp_path / "bad.tar", a + tail)
        with pytest.raises(ReadError, match=match):
            list(iter_samples(plan_units(cfg(bad))[0], cfg(bad)))


def test_bytes_after_a_gzip_end_are_ignored_with_a_warning(tmp_path, shards, caplog):
    """gzip itself ignores bytes after its end ("trailing garbage ignored"): the complete
    archive inside still counts, and a warning says the rest was not read."""
    tgz = write(tmp_path / "t.tar.gz", gzip.compress(shards[0].read_bytes()) + b"garbage\n")
    with caplog.at_level("WARNING", logger="webssl.readers"):
        got = read_all(plan_units(cfg(tgz)), cfg(tgz))
    assert len(got) == 5 and all(s.data for s in got)
    assert "after the archive's end" in caplog.text


def test_pipe_second_archive_that_stalls_mid_member_is_read_whole(tmp_path, shards,
                                                                 monkeypatch):
    """The bound on waits holds only between archives: inside the second one, a stall longer
    than it (a slow second download) is waited out, as inside the first."""
    from webssl_cli.readers import pipe_stream
    monkeypatch.setattr(pipe_stream, "PIPE_LINGER_S", 1.0)
    half = shards[1].stat().st_size // 2
    spec = (f"pipe:cat {shards[0]}; head -c {half} {shards[1]}; sleep 2; "
            f"tail -c +{half + 1} {shards[1]}")
    got = read_all(plan_units(cfg(spec)), cfg(spec))
    assert [s.data for s in got] == [s.data for s in read_all(plan_units(cfg(*shards[:2])),
                                                               cfg(*shards[:2]))]


def test_pipe_archive_that_starts_after_a_pause_is_read(tmp_path, shards, caplog):
    """A command that pauses 3 s between two archives (a second download starting slowly):
    the second archive is read too, without a warning."""
    spec = f"pipe:cat {shards[0]}; sleep 3; cat {shards[1]}"
    with caplog.at_level("WARNING", logger="webssl.readers"):
        got = read_all(plan_units(cfg(spec)), cfg(spec))
    assert len(got) == 10 and "not read" not in caplog.text


def test_shards_with_the_same_stem_get_unique_names_and_keys(tmp_path, shards):
    other = tmp_path / "copy"
    other.mkdir()
    shutil.copy(shards[0], other / shards[0].name)
    c = cfg(shards[0], other)
    units = plan_units(c)
    assert [u.name for u in units] == ["shard-000000", "shard-000000_2"]
    keys = [s.key for s in read_all(units, c)]
    assert len(keys) == len(set(keys)) == 10


def test_read_error_pickles_and_rebuilds_from_a_message():
    unit = Unit(3, "tar", "/x/s.tar", "s")
    err = pickle.loads(pickle.dumps(ReadError(unit, "cut short")))
    assert err.unit == unit and err.message == "cut short" and str(err) == "/x/s.tar: cut short"
    assert ReadError("only a message").unit is None


def test_units_round_trip_through_json(tmp_path, shards):
    write(tmp_path / "f" / "a.jpg", gen.make_jpeg(8, 8))
    pq_path = gen.write_parquet(tmp_path / "t.parquet", [b"1", b"2"])
    units = plan_units(cfg(shards[0], tmp_path / "f", pq_path))
    assert [Unit.from_dict(json.loads(json.dumps(u.to_dict()))) for u in units] == units


def test_many_pipe_commands_without_a_shard_name_get_numbered_names():
    """pipe: commands that name no .tar are all called "pipe": numbered in order, also past
    a name that already holds a number (each name remembers its last suffix, so 12,000 of
    them plan in well under a second rather than 45 s)."""
    specs = [f"pipe:cat /data/{i:05d}" for i in range(3000)]
    units = plan_units(InputConfig(inputs=tuple(specs)))
    assert [u.name for u in units[:3]] == ["pipe", "pipe_2", "pipe_3"]
    assert units[-1].name == "pipe_3000" and len({u.name for u in units}) == 3000


def test_a_folder_whose_name_looks_like_a_pattern_is_taken_literally(tmp_path):
    root = tmp_path / "photos [2020] {a,b}"
    write(root / "x.jpg", gen.make_jpeg(8, 8))
    (unit,) = plan_units(cfg(root))
    assert unit.items == (str(root / "x.jpg"),)


def test_a_shard_given_twice_is_read_once_and_missing_listed_shards_are_usage_errors(tmp_path, shards):
    units = plan_units(cfg(shards[0], shards[0].parent / "shard-00000{0,1}.tar"))
    assert [u.name for u in units] == ["shard-000000", "shard-000001"]
    lst = write(tmp_path / "shards.txt", f"{shards[0]}\n{tmp_path}/gone.tar\n".encode())
    with pytest.raises(UsageError, match="1 listed shards do not exist.*gone.tar"):
        plan_units(cfg(lst))
