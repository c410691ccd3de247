"""The embedded data directory is private to its owner: ``make_private`` tightens a whole tree (without following
symlinks), ``open_private_append`` creates 0600 files, ``chdb_directory`` finds the local store directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from auditlogkit.server.private_dir import chdb_directory, make_private, open_private_append


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_make_private_tightens_the_whole_tree_and_not_what_links_point_to(tmp_path: Path) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "chdb" / "store" / "abc").mkdir(parents=True)
    outside.mkdir()
    (outside / "shared.txt").write_text("x")
    os.chmod(outside / "shared.txt", 0o644)
    files = {data / "auditlog.log": 0o644, data / "jwt-secret": 0o666, data / "chdb" / "store" / "abc" / "a.bin": 0o640,
             data / "tool.sh": 0o755, data / "readonly": 0o444}
    for f, m in files.items():
        f.write_text("x")
        os.chmod(f, m)
    for d in (data, data / "chdb", data / "chdb" / "store", data / "chdb" / "store" / "abc"):
        os.chmod(d, 0o755)
    os.symlink(outside / "shared.txt", data / "link.txt")
    os.symlink(outside, data / "chdb" / "linked-dir")

    assert make_private(data) == 9
    for d in (data, data / "chdb", data / "chdb" / "store", data / "chdb" / "store" / "abc"):
        assert mode(d) == 0o700, d
    assert {f.name: mode(f) for f in files} == {"auditlog.log": 0o600, "jwt-secret": 0o600, "a.bin": 0o600,
                                                "tool.sh": 0o700, "readonly": 0o400}
    assert mode(outside) == 0o755 and mode(outside / "shared.txt") == 0o644, "links are not followed"
    assert make_private(data) == 0, "idempotent"


def test_make_private_creates_a_missing_directory_0700(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        make_private(tmp_path / "new" / "data")
    finally:
        os.umask(old)
    assert mode(tmp_path / "new" / "data") == 0o700


def test_open_private_append_creates_0600_and_tightens_an_existing_file(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with open_private_append(tmp_path / "new.log") as f:
            f.write("one\n")
        loose = tmp_path / "loose.log"
        loose.write_text("zero\n")
        os.chmod(loose, 0o644)
        with open_private_append(loose) as f:
            f.write("one\n")
    finally:
        os.umask(old)
    assert mode(tmp_path / "new.log") == 0o600
    assert mode(loose) == 0o600 and loose.read_text() == "zero\none\n"


def test_chdb_directory() -> None:
    assert chdb_directory("chdb:///var/lib/auditlog/chdb") == Path("/var/lib/auditlog/chdb")
    assert chdb_directory("chdb:///tmp/with%20space") == Path("/tmp/with space")
    assert chdb_directory("chdb://memory") is None
    assert chdb_directory("http://u:p@ch.example:8123") is None
    assert chdb_directory("https://ch.example") is None
