"""Settings that keep the record honest: the HS256 secret (strong, never an example value shipped in this
repository), the tokens `auditlog token` and `auditlog up` mint (``aud``/``iss`` when configured), the JWKS URL
(https, or http on loopback) and the proxies whose ``X-Forwarded-For`` is believed (addresses or CIDRs)."""

from __future__ import annotations

import re
from pathlib import Path

import jwt
import pytest
from pydantic import ValidationError

from auditlogkit.server.settings import Settings
from auditlogkit.server.signing import EXAMPLE_SECRETS, weak_secret

ROOT = Path(__file__).resolve().parents[2]
STRONG = "a-strong-test-secret-0123456789abcdef0123"


def example_secret_values() -> dict[str, str]:
    """Every secret value the repository ships as an example: where -> value."""
    found: dict[str, str] = {}
    env_example = ROOT / "deploy" / ".env.example"
    for line in env_example.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"^(AUDITLOG_\w*SECRET)=(.*)$", line.strip()):
            found[f".env.example {m.group(1)}"] = m.group(2).strip("'\"")
    import yaml

    doc = yaml.safe_load((ROOT / "deploy" / "k8s" / "secret.example.yaml").read_text(encoding="utf-8"))
    for key, value in doc["stringData"].items():
        if key.endswith("secret"):
            found[f"secret.example.yaml {key}"] = str(value)
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "deploy").rglob("*.md"))]:
        for m in re.finditer(r"AUDITLOG_(?:JWT|SERVER)_SECRET[=:]\s*['\"]?([^\s'\"`]+)", md.read_text(encoding="utf-8")):
            if not m.group(1).startswith(("$", "<", "...", "…")):
                found[f"{md.name} {m.group(0)}"] = m.group(1)
    return found


# ----- the HS256 secret ---------------------------------------------------------------------------------
@pytest.mark.parametrize("weak", ["s" * 31, "short", "change-me-to-32-or-more-random-bytes",
                                  "change-me-0123456789abcdef0123456789abcdef", " Change-Me-To-32-Or-More-Random-Bytes "])
def test_a_weak_or_example_jwt_secret_is_refused_naming_the_setting(weak: str) -> None:
    with pytest.raises(ValidationError) as e:
        Settings(jwt_secret=weak)
    assert "AUDITLOG_JWT_SECRET" in str(e.value)


def test_a_strong_or_absent_jwt_secret_is_accepted() -> None:
    assert Settings(jwt_secret="s" * 32).jwt_secret == "s" * 32
    assert Settings(jwt_secret=STRONG).jwt_secret == STRONG
    assert Settings(jwt_secret=None).jwt_secret is None
    assert not Settings(jwt_secret="").jwt_secret  # empty = unset (`auditlog up` generates one)


def test_every_example_secret_the_repository_ships_is_refused() -> None:
    found = example_secret_values()
    # the example files carry both secrets the processes read
    assert {".env.example AUDITLOG_JWT_SECRET", ".env.example AUDITLOG_SERVER_SECRET",
            "secret.example.yaml jwt-secret", "secret.example.yaml server-secret"} <= set(found), found
    for where, value in found.items():
        assert weak_secret(value), f"{where}: {value!r} would be accepted as a real secret"
        assert value.strip().lower() in EXAMPLE_SECRETS or len(value.encode()) < 32, where
        with pytest.raises(ValidationError, match="AUDITLOG_JWT_SECRET"):
            Settings(jwt_secret=value)
        with pytest.raises(ValidationError, match="AUDITLOG_SERVER_SECRET"):
            Settings(server_secret=value)


def test_the_example_files_say_replace() -> None:
    env_example = (ROOT / "deploy" / ".env.example").read_text(encoding="utf-8")
    secret_example = (ROOT / "deploy" / "k8s" / "secret.example.yaml").read_text(encoding="utf-8")
    for text in (env_example, secret_example):
        assert re.search(r"\breplace\b", text, re.I)
        assert "openssl rand" in text or "secrets.token_urlsafe" in text  # how to make a real one


# ----- tokens minted here carry aud / iss when the server checks them -----------------------------------
AUD, ISS = "auditlog-api", "https://id.example.test/"


def _claims(tok: str) -> dict[str, object]:
    return dict(jwt.decode(tok, options={"verify_signature": False}))


def test_auditlog_token_sets_aud_and_iss_when_configured(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from auditlogkit.query_api.security.auth import TokenVerifier
    from auditlogkit.server.app.cli import main

    for k in ("AUDITLOG_JWT_AUDIENCE", "AUDITLOG_JWT_ISSUER", "AUDITLOG_JWT_SECRET"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AUDITLOG_JWT_SECRET", STRONG)
    monkeypatch.setenv("AUDITLOG_JWT_AUDIENCE", AUD)
    monkeypatch.setenv("AUDITLOG_JWT_ISSUER", ISS)
    server = TokenVerifier(Settings(jwt_secret=STRONG, jwt_audience=AUD, jwt_issuer=ISS))
    for argv in (["--org", "acme"], ["--service", "--write-org", "acme"]):
        assert main(["token", *argv]) == 0
        tok = capsys.readouterr().out.strip()
        assert (_claims(tok)["aud"], _claims(tok)["iss"]) == (AUD, ISS)
        if "--service" in argv:
            assert server.verify_service(tok).may_write("acme")
        else:
            assert server.verify(tok).org_id == "acme"
    monkeypatch.delenv("AUDITLOG_JWT_AUDIENCE")
    monkeypatch.delenv("AUDITLOG_JWT_ISSUER")
    assert main(["token", "--org", "acme"]) == 0
    assert {"aud", "iss"}.isdisjoint(_claims(capsys.readouterr().out.strip()))  # nothing configured: none


def test_demo_tokens_carry_aud_and_iss_when_configured() -> None:
    from auditlogkit.query_api.security.auth import TokenVerifier
    from auditlogkit.server.app.embedded import demo_tokens

    server = TokenVerifier(Settings(jwt_secret=STRONG, jwt_audience=AUD, jwt_issuer=ISS))
    tokens = demo_tokens(STRONG, audience=AUD, issuer=ISS)
    for tok in tokens.values():
        assert server.verify(tok).org_id == "acme"
    assert all({"aud", "iss"}.isdisjoint(_claims(t)) for t in demo_tokens(STRONG).values())


# ----- JWKS URL -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["https://id.example.com/.well-known/jwks.json", "http://127.0.0.1:8080/jwks",
                                 "http://localhost/jwks", "http://[::1]:9000/keys"])
def test_jwks_url_https_or_loopback_http(url: str) -> None:
    assert Settings(jwt_jwks_url=url).jwt_jwks_url == url


@pytest.mark.parametrize("url", ["http://id.example.com/jwks", "http://10.0.0.1/jwks", "file:///etc/jwks.json",
                                 "ftp://id.example.com/jwks", "https:///jwks", "not a url"])
def test_jwks_url_refused_unless_https_or_loopback(url: str) -> None:
    with pytest.raises(ValidationError, match="AUDITLOG_JWT_JWKS_URL"):
        Settings(jwt_jwks_url=url)


# ----- proxies whose X-Forwarded-For is believed --------------------------------------------------------
def test_forwarded_allow_ips_default_is_none() -> None:
    from auditlogkit.query_api.security.client_ip import proxy_options

    s = Settings()
    assert s.forwarded_allow_ips == []
    assert proxy_options(s) == {"proxy_headers": False, "forwarded_allow_ips": []}


def test_forwarded_allow_ips_addresses_and_cidrs() -> None:
    from auditlogkit.query_api.security.client_ip import proxy_options

    s = Settings(api_forwarded_allow_ips=" 10.0.0.5, 10.244.0.0/16 ,fd00::/8,::1 ")
    assert s.forwarded_allow_ips == ["10.0.0.5", "10.244.0.0/16", "fd00::/8", "::1"]
    assert proxy_options(s) == {"proxy_headers": True, "forwarded_allow_ips": s.forwarded_allow_ips}


@pytest.mark.parametrize("bad", ["*", "proxy.internal", "10.0.0.1/8", "10.0.0.0/33", "300.1.1.1"])
def test_forwarded_allow_ips_refuses_what_uvicorn_would_silently_misread(bad: str) -> None:
    """'*' would let every client choose the IP recorded; a name, a CIDR with host bits or a bad address would
    be taken by uvicorn as a literal that never matches (no error, no proxy believed)."""
    with pytest.raises(ValidationError, match="AUDITLOG_API_FORWARDED_ALLOW_IPS"):
        Settings(api_forwarded_allow_ips=f"10.1.1.1,{bad}")


def test_uvicorn_trusts_a_listed_cidr_and_nothing_else() -> None:
    """The uvicorn in use understands CIDRs in ``forwarded_allow_ips`` (older ones compared literals only)."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    trusted = ProxyHeadersMiddleware(app, trusted_hosts=["10.244.0.0/16"]).trusted_hosts
    assert "10.244.3.7" in trusted and "10.245.0.1" not in trusted and "127.0.0.1" not in trusted
