"""Tar shards: hard links and symlinks resolve to earlier members of the same shard or become
ledger rows that say why; ``#N`` keys never collide with real keys; gzip is recognised by its
bytes, not by the name or the ``pipe:`` command; an empty shard fails only its own unit."""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from tests.helpers import images as gen
from webssl_cli.config import InputConfig
from webssl_cli.readers import ReadError, iter_samples, plan_units
from webssl_cli.readers import tar_stream


def cfg(*inputs, **kw) -> InputConfig:
    return InputConfig(inputs=tuple(str(i) for i in inputs), **kw)


def make_tar(path: Path, members: list[tuple[str, bytes | tuple[str, str]]]) -> Path:
    """``(name, data)`` regular files, ``(name, ("hard"|"sym", target))`` links, in order."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, what in members:
            info = tarfile.TarInfo(name)
            if isinstance(what, tuple):
                info.type = tarfile.LNKTYPE if what[0] == "hard" else tarfile.SYMTYPE
                info.linkname = what[1]
                tf.addfile(info)
            else:
                info.size = len(what)
                tf.addfile(info, io.BytesIO(what))
    return path


def samples(path, **kw):
    c = cfg(path, **kw)
    return {s.key: s for u in plan_units(c) for s in iter_samples(u, c)}


def test_links_resolve_to_earlier_members_or_fail_with_a_reason(tmp_path):
    a, later = gen.make_jpeg(16, 16, seed=1), gen.make_jpeg(16, 16, seed=2)
    long_dir = "d" * 120                                   # GNU long names and long link names
    shard = make_tar(tmp_path / "links.tar", [
        ("x/a.jpg", a),
        ("x/a.json", b'{"caption": "hi"}'),
        ("x/b.jpg", ("hard", "x/a.jpg")),
        ("x/b.json", ("hard", "x/a.json")),
        ("x/c.jpg", ("sym", "a.jpg")),                     # relative to the link's folder
        ("x/c2.jpg", ("sym", "./c.jpg")),                  # a link to a resolved link
        (f"{long_dir}/l.jpg", ("hard", "x/a.jpg")),
        (f"{long_dir}/m.jpg", ("sym", f"../{long_dir}/l.jpg")),
        ("x/out.jpg", ("sym", "../../etc/a.jpg")),
        ("x/abs.jpg", ("sym", "/data/a.jpg")),
        ("x/fwd.jpg", ("hard", "x/later.jpg")),
        ("x/later.jpg", later),
        ("x/t.txt", ("sym", "a.jpg")),                     # not an image member: no image
    ])
    got = samples(shard, keep_json=True)
    assert len(got) == 11
    for k in ("x/a", "x/b", "x/c", "x/c2", f"{long_dir}/l", f"{long_dir}/m"):
        assert got[f"links/{k}"].data == a, k
    assert got["links/x/b"].meta == {"caption": "hi"}
    assert got["links/x/later"].data == later
    out, absolute, fwd = got["links/x/out"], got["links/x/abs"], got["links/x/fwd"]
    for s in (out, absolute, fwd):
        assert s.data is None and s.error_type == "UnresolvedLink"
    assert "'x/out.jpg' is a symlink to '../../etc/a.jpg'" in out.error
    assert "links outside the shard are not followed" in out.error
    assert "outside the shard" in absolute.error
    assert "hard link to 'x/later.jpg'" in fwd.error and "not an earlier member" in fwd.error
    assert got["links/x/t"].error_type == "NoImage"


def test_fifo_and_device_members_with_image_names_are_ledger_rows(tmp_path):
    jpg = gen.make_jpeg(16, 16)
    shard = tmp_path / "special.tar"
    with tarfile.open(shard, "w") as tf:
        for name, kind in (("f.jpg", tarfile.FIFOTYPE), ("c.jpg", tarfile.CHRTYPE),
                           ("notes.txt", tarfile.FIFOTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            tf.addfile(info)
        info = tarfile.TarInfo("ok.jpg")
        info.size = len(jpg)
        tf.addfile(info, io.BytesIO(jpg))
    got = samples(shard)
    assert list(got) == ["special/f", "special/c", "special/ok"]
    assert got["special/ok"].data == jpg
    for key, what in (("special/f", "FIFO"), ("special/c", "character device")):
        assert got[key].data is None and got[key].error_type == "SpecialMember"
        assert f"is a {what} entry" in got[key].error


def test_a_link_to_a_member_whose_data_was_let_go_fails_with_a_reason(tmp_path, monkeypatch):
    a, b = gen.make_jpeg(16, 16, seed=1), gen.make_jpeg(16, 16, seed=2)
    monkeypatch.setattr(tar_stream, "LINK_MEMORY", len(b) + 1)   # room for one image only
    shard = make_tar(tmp_path / "far.tar", [("a.jpg", a), ("b.jpg", b), ("c.jpg", ("hard", "a.jpg")),
                                            ("d.jpg", ("hard", "b.jpg"))])
    got = samples(shard)
    assert got["far/d"].data == b
    assert got["far/c"].data is None and got["far/c"].error_type == "UnresolvedLink"
    assert "data was not kept" in got["far/c"].error


def test_made_keys_never_collide_with_real_keys(tmp_path):
    jpg = gen.make_jpeg(8, 8)
    shard = make_tar(tmp_path / "k.tar", [("s1.jpg", jpg), ("s1#2.jpg", jpg), ("s1.jpg", jpg),
                                          ("x.jpg", jpg), ("s1.jpg", jpg)])
    c = cfg(shard)
    keys = [s.key for s in iter_samples(plan_units(c)[0], c)]
    assert keys == ["k/s1", "k/s1#2", "k/s1#3", "k/x", "k/s1#4"]


@pytest.fixture()
def shard(tmp_path) -> Path:
    (path,) = gen.write_shards(tmp_path / "wds", 1, 3)
    return path


def test_gzip_is_recognised_by_its_bytes(tmp_path, shard):
    want = [(k, s.data) for k, s in samples(shard).items()]
    gz = tmp_path / "z" / "shard-000000.tar.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(shard.read_bytes()))
    plain_named_gz = tmp_path / "p" / "shard-000000.tar.gz"
    plain_named_gz.parent.mkdir()
    plain_named_gz.write_bytes(shard.read_bytes())
    for spec in (f"pipe:zcat {gz}",                    # gunzipped by the command: not again
                 f"pipe:cat {gz} | cat",               # gzip bytes, name hidden from us
                 str(plain_named_gz)):                 # a plain tar with a .gz name
        assert [(k, s.data) for k, s in samples(spec).items()] == want, spec


def test_an_empty_shard_in_a_folder_fails_only_its_own_unit(tmp_path, shard):
    (shard.parent / "shard-000001.tar").write_bytes(b"")
    c = cfg(shard.parent)
    units = plan_units(c)
    assert [u.name for u in units] == ["shard-000000", "shard-000001"]
    assert len(list(iter_samples(units[0], c))) == 3
    with pytest.raises(ReadError, match=r"shard-000001.tar: the shard is empty \(0 bytes\)"):
        list(iter_samples(units[1], c))
