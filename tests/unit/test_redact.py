"""Store URLs and error messages are printed and logged without user or password (``redact_url``/``redact_text``)."""

from __future__ import annotations

import pytest

from auditlogkit.server.store import redact_text, redact_url


@pytest.mark.parametrize(("url", "safe"), [
    ("http://alice:s3cret@ch.example:8123", "http://***@ch.example:8123"),
    ("https://alice:s3cret@ch.example:8443/db?secure=1", "https://***@ch.example:8443/db?secure=1"),
    ("http://alice@ch.example:8123/", "http://***@ch.example:8123/"),
    ("http://alice:p@ss@ch.example:8123", "http://***@ch.example:8123"),  # unencoded '@' in the password
    ("http://alice:p%40ss@ch.example:8123", "http://***@ch.example:8123"),
    ("http://ch.example:8123/?user=alice&password=s3cret&x=1", "http://ch.example:8123/?user=alice&password=***&x=1"),
    ("http://ch.example:8123/?access_token=abc", "http://ch.example:8123/?access_token=***"),
    ("http://ch.example:8123", "http://ch.example:8123"),
    ("chdb:///var/lib/auditlog/chdb", "chdb:///var/lib/auditlog/chdb"),
    ("", ""),
])
def test_redact_url(url: str, safe: str) -> None:
    assert redact_url(url) == safe


def test_redact_url_keeps_no_part_of_a_well_formed_password() -> None:
    for url in ("http://u:hunter22@h:1", "https://u:hunter22@h", "http://u:hunter22@[::1]:8123/x"):
        assert "hunter22" not in redact_url(url) and "u:" not in redact_url(url).split("//", 1)[1]


def test_redact_text_replaces_the_url_other_urls_and_the_password() -> None:
    url = "http://alice:s3cret%21@ch.example:8123/"
    msg = (f"cannot connect to {url}: retry via https://bob:other@proxy:3128 failed; "
           "server said: password 's3cret!' rejected; raw s3cret%21")
    out = redact_text(msg, url)
    assert "http://***@ch.example:8123/" in out and "https://***@proxy:3128" in out
    for secret in ("s3cret", "alice", "bob", "other"):
        assert secret not in out, out


def test_redact_text_leaves_harmless_text_alone() -> None:
    assert redact_text("no route to host", "chdb:///tmp/x") == "no route to host"
    assert redact_text("no route to host", "") == "no route to host"
    assert redact_text("a b c", "http://u:ab@h") == "a b c"  # passwords shorter than 3 are not masked everywhere
