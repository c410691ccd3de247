"""``auditlog export`` without ``-o`` writes to a plain file name in the current directory whatever the server's
``Content-Disposition`` says (``safe_filename``), and parses that header (``disposition_filename``)."""

from __future__ import annotations

import pytest

from auditlogkit.query_api.cli import MAX_FILENAME, disposition_filename, safe_filename


@pytest.mark.parametrize(("suggested", "name"), [
    ("audit-log-20260101T000000Z-20260102T000000Z.csv", "audit-log-20260101T000000Z-20260102T000000Z.csv"),
    ("../../etc/passwd", "passwd"),
    ("/tmp/x", "x"),
    ("/etc/", "audit-log.csv"),
    ("..", "audit-log.csv"),
    (".", "audit-log.csv"),
    ("...", "audit-log.csv"),
    (".bashrc", "bashrc"),
    ("../.ssh/authorized_keys", "authorized_keys"),
    ("..\\..\\windows\\win.ini", "win.ini"),
    ("C:\\temp\\a.csv", "a.csv"),
    ("a\x00b.csv", "ab.csv"),
    ("a\nb\r.csv", "ab.csv"),
    ("\x00", "audit-log.csv"),
    ("-rf.csv", "rf.csv"),
    ("audit log ü.csv", "auditlog.csv"),
    ("日本語", "audit-log.csv"),
    ("\u202egnp.csv", "gnp.csv"),  # right-to-left override
    ("", "audit-log.csv"),
    (None, "audit-log.csv"),
])
def test_safe_filename_of_hostile_names(suggested: str | None, name: str) -> None:
    assert safe_filename(suggested, "csv") == name


def test_safe_filename_is_always_a_plain_bounded_name() -> None:
    long = safe_filename("a" * 1000 + ".ndjson", "ndjson")
    assert len(long) == MAX_FILENAME == 200
    for hostile in ("../" * 100, "/" * 10, "x/../../y", "..\x00/..", ". .", "~/.profile", "$(reboot)"):
        out = safe_filename(hostile, "ndjson")
        assert out and "/" not in out and "\\" not in out and not out.startswith(".") and out not in (".", "..")
        assert set(out) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"), out
    assert safe_filename("", "ndjson") == "audit-log.ndjson"


@pytest.mark.parametrize(("header", "name"), [
    ('attachment; filename="audit-log-x.csv"', "audit-log-x.csv"),
    ('attachment; filename="../../etc/passwd"', "../../etc/passwd"),
    ("attachment; filename*=UTF-8''%2E%2E%2Fevil.csv", "../evil.csv"),
    ("attachment", None),
    ("", None),
])
def test_disposition_filename(header: str, name: str | None) -> None:
    assert disposition_filename(header) == name
    assert "/" not in safe_filename(disposition_filename(header), "csv")
