"""``auditlog api`` bound beyond loopback without AUDITLOG_JWT_AUDIENCE / AUDITLOG_JWT_ISSUER warns at start
(``api.token_claims_unchecked`` and one stderr line); on loopback, or with both set, it does not."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from auditlogkit.query_api.cli import is_loopback, warn_unchecked_claims
from auditlogkit.server.settings import Settings


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("api.example.com", False), ("", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_warns_on_all_interfaces_without_audience_and_issuer(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(jwt_secret="s" * 32, jwt_audience=None, jwt_issuer=None)
    with capture_logs() as logs:
        assert warn_unchecked_claims(settings, "0.0.0.0") is True
    assert [(e["event"], e["log_level"], e["missing"]) for e in logs] == [
        ("api.token_claims_unchecked", "warning", ["AUDITLOG_JWT_AUDIENCE", "AUDITLOG_JWT_ISSUER"])]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "set AUDITLOG_JWT_AUDIENCE and AUDITLOG_JWT_ISSUER" in err


def test_names_only_the_missing_claim(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(jwt_secret="s" * 32, jwt_audience="auditlog-api", jwt_issuer=None)
    assert warn_unchecked_claims(settings, "10.0.0.5") is True
    err = capsys.readouterr().err
    assert "set AUDITLOG_JWT_ISSUER" in err and "AUDITLOG_JWT_AUDIENCE" not in err


def test_silent_on_loopback_or_with_both_claims(capsys: pytest.CaptureFixture[str]) -> None:
    with capture_logs() as logs:
        assert warn_unchecked_claims(Settings(jwt_secret="s" * 32), "127.0.0.1") is False
        both = Settings(jwt_secret="s" * 32, jwt_audience="auditlog-api", jwt_issuer="https://idp.example")
        assert warn_unchecked_claims(both, "0.0.0.0") is False
    assert logs == [] and capsys.readouterr().err == ""
