"""`webssl status OUT` with an OUT that is not a folder says so (exit 2), instead of calling it
'not an output folder (yet)'."""
from __future__ import annotations

from tests.helpers.cli import cli_here


def test_status_of_a_missing_folder(tmp_path):
    r = cli_here(["status", tmp_path / "nope"])
    assert r.returncode == 2
    assert f"{tmp_path / 'nope'}: no such folder" in r.stderr and "manifest" not in r.stderr


def test_status_of_a_file(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    r = cli_here(["status", tmp_path / "f.txt"])
    assert r.returncode == 2
    assert "is a file, not a folder" in r.stderr


def test_status_of_an_empty_folder_still_names_the_manifest(tmp_path):
    r = cli_here(["status", tmp_path])
    assert r.returncode == 2 and "has no webssl manifest" in r.stderr
