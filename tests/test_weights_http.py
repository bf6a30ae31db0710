"""download_file / verify_file against a real HTTP server on 127.0.0.1 (resume, checksums)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.helpers.http_range_server import RangeServer
from webssl_cli.errors import CheckpointError, WebsslError
from webssl_cli.weights import download_file, verify_file

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "dino-tiny" / "official.pth"
NAME = "webssl_dino300m_full2b_224.pth"
CHUNK = 1 << 16


@pytest.fixture(scope="module")
def payload() -> bytes:
    return FIXTURE.read_bytes()


@pytest.fixture
def server(payload):
    with RangeServer({NAME: payload}) as srv:
        yield srv


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".part", ".part.json")))


def test_download_with_progress_records_sha256(server, payload, tmp_path, capsys):
    dest = tmp_path / "cache" / NAME
    out = download_file(server.url(NAME), dest, progress=True)
    assert out == dest
    assert dest.read_bytes() == payload
    assert (tmp_path / "cache" / f"{NAME}.sha256").read_text() == f"{sha(payload)}  {NAME}\n"
    stamp = json.loads((tmp_path / "cache" / f"{NAME}.verified").read_text())
    assert stamp["sha256"] == sha(payload) and stamp["size"] == len(payload)
    assert stamp["mtime_ns"] == dest.stat().st_mtime_ns
    assert leftovers(dest.parent) == []
    err = capsys.readouterr().err
    assert f"downloading {NAME}" in err and f"downloaded {NAME}: 100%" in err
    # a second call finds the verified file and sends no request
    n = len(server.requests("GET"))
    download_file(server.url(NAME), dest, progress=False)
    assert len(server.requests("GET")) == n


def test_resume_after_connection_dropped_half_way(server, payload, tmp_path):
    half = len(payload) // 2
    server.drop_after, server.drops = half, 1
    dest = tmp_path / NAME
    download_file(server.url(NAME), dest, progress=False, backoff_s=0.05, chunk_size=CHUNK)
    assert dest.read_bytes() == payload
    gets = server.requests("GET")
    assert len(gets) == 2
    assert "Range" not in gets[0].headers
    resumed_at = int(gets[1].headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert half - CHUNK < resumed_at <= half     # the last, incomplete read may be lost
    assert gets[1].headers["If-Range"] == f'"{sha(payload)}"'
    assert verify_file(dest) is None


def test_resume_in_a_later_run_keeps_the_part(server, payload, tmp_path):
    third = len(payload) // 3
    server.drop_after, server.drops = third, 1
    dest = tmp_path / NAME
    with pytest.raises(WebsslError, match="run the same command again to resume") as info:
        download_file(server.url(NAME), dest, progress=False, retries=0, chunk_size=CHUNK)
    assert str(dest) + ".part" in str(info.value)
    assert not dest.exists()
    kept = (tmp_path / f"{NAME}.part").stat().st_size
    assert third - CHUNK < kept <= third
    download_file(server.url(NAME), dest, progress=False)
    assert dest.read_bytes() == payload
    assert server.requests("GET")[-1].headers["Range"] == f"bytes={kept}-"
    assert leftovers(tmp_path) == []


def test_server_ignoring_ranges_restarts_cleanly(server, payload, tmp_path, capsys):
    server.drop_after, server.drops = 3 * CHUNK + 100, 1
    dest = tmp_path / NAME
    with pytest.raises(WebsslError):
        download_file(server.url(NAME), dest, progress=False, retries=0, chunk_size=CHUNK)
    assert 0 < (tmp_path / f"{NAME}.part").stat().st_size <= 3 * CHUNK + 100
    server.ignore_range = True
    download_file(server.url(NAME), dest, progress=False)
    assert dest.read_bytes() == payload
    assert "restarting from byte 0" in capsys.readouterr().err


def test_changed_remote_file_is_not_spliced(server, payload, tmp_path):
    server.drop_after, server.drops = len(payload) // 2, 1
    dest = tmp_path / NAME
    with pytest.raises(WebsslError):
        download_file(server.url(NAME), dest, progress=False, retries=0, chunk_size=CHUNK)
    assert (tmp_path / f"{NAME}.part").stat().st_size > 0
    new = bytes(reversed(payload))           # same size, other bytes, other ETag
    server.files[NAME] = new
    download_file(server.url(NAME), dest, progress=False)
    assert dest.read_bytes() == new
    last = server.requests("GET")[-1].headers
    assert last["If-Range"] == f'"{sha(payload)}"' and last["Range"].startswith("bytes=")
    assert (tmp_path / f"{NAME}.sha256").read_text().split()[0] == sha(new)


def test_part_longer_than_remote_gets_416_and_restarts(server, payload, tmp_path):
    dest = tmp_path / NAME
    (tmp_path / f"{NAME}.part").write_bytes(payload + b"junk")
    (tmp_path / f"{NAME}.part.json").write_text(json.dumps({"url": server.url(NAME)}))
    download_file(server.url(NAME), dest, progress=False)
    assert dest.read_bytes() == payload
    assert [r.headers.get("Range") for r in server.requests("GET")] == \
        [f"bytes={len(payload) + 4}-", None]


def test_etag_checksum_mismatch_discards_the_download(server, payload, tmp_path):
    server.etag[NAME] = '"' + sha(b"other bytes") + '"'
    dest = tmp_path / NAME
    with pytest.raises(CheckpointError, match="checksum mismatch") as info:
        download_file(server.url(NAME), dest, progress=False)
    assert sha(payload) in str(info.value) and sha(b"other bytes") in str(info.value)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{NAME}.lock"]


def test_expected_sha256_mismatch_is_refused(server, tmp_path):
    server.etag[NAME] = '"not-a-sha"'
    dest = tmp_path / NAME
    with pytest.raises(CheckpointError, match="expected is " + "0" * 64):
        download_file(server.url(NAME), dest, progress=False, expected_sha256="0" * 64)
    assert not dest.exists()


def test_missing_remote_file_names_the_url(server, tmp_path):
    with pytest.raises(WebsslError, match=r"nothere\.pth: not found \(HTTP 404\)"):
        download_file(server.url("nothere.pth"), tmp_path / "nothere.pth", progress=False)


def test_verify_file_cheap_stamp_and_forced_rehash(server, payload, tmp_path):
    dest = tmp_path / NAME
    download_file(server.url(NAME), dest, progress=False)
    st = dest.stat()
    # same size and restored mtime: the cheap check trusts the stamp (documented limit)...
    dest.write_bytes(b"\0" + payload[1:])
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    verify_file(dest)
    # ...a forced check rehashes and catches the damage
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        verify_file(dest, force=True)
    # any change of mtime makes the cheap check rehash too
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    with pytest.raises(CheckpointError, match=f"{NAME}.sha256 records {sha(payload)}"):
        verify_file(dest)


def test_damaged_cached_file_is_downloaded_again(server, payload, tmp_path, capsys):
    dest = tmp_path / NAME
    download_file(server.url(NAME), dest, progress=False)
    dest.write_bytes(payload[:-10])
    download_file(server.url(NAME), dest, progress=False)
    assert dest.read_bytes() == payload
    assert len(server.requests("GET")) == 2
    assert "downloading it again" in capsys.readouterr().err


def test_verify_file_without_sidecar_records_one(tmp_path, capsys):
    f = tmp_path / "copied.pth"
    f.write_bytes(b"abc")
    verify_file(f)
    assert (tmp_path / "copied.pth.sha256").read_text() == f"{sha(b'abc')}  copied.pth\n"
    assert "has no copied.pth.sha256" in capsys.readouterr().err
    f.write_bytes(b"abd")
    with pytest.raises(CheckpointError):
        verify_file(f, force=True)
