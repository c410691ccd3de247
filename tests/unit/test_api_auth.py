"""Token verification (HS256 / RS256 PEM / JWKS, aud/iss, claim types), cursor encoding, the scoping builder's
guards, access logs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from auditlogkit.query_api.core.errors import ApiError, install_error_handlers
from auditlogkit.query_api.deps import ReadPrincipal
from auditlogkit.query_api.read import cursor
from auditlogkit.query_api.read.filters import SEARCH_EXPR, like_contains
from auditlogkit.query_api.security.auth import TokenVerifier, mint_token
from auditlogkit.query_api.security.principal import Principal
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.server.settings import Settings
from auditlogkit.server.signing import ServerKeys

CLAIMS = {"sub": "u1", "email": "u1@acme.example", "org_id": "acme", "role": "workspace_admin",
          "workspaces": ["w1"], "permissions": ["audit:read"]}


def _claims(**over: Any) -> dict[str, Any]:
    return {**CLAIMS, "exp": int(time.time()) + 60, **over}


@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    d = tmp_path_factory.mktemp("keys")
    pem = d / "pub.pem"
    pem.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = d / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}))
    return key, pem, jwks


def _status(v: TokenVerifier, tok: str) -> int | Principal:
    try:
        return v.verify(tok)
    except ApiError as e:
        return e.status


def test_hs256_roundtrip_and_mint_token() -> None:
    v = TokenVerifier(Settings(jwt_secret="s" * 32))
    tok = mint_token("s" * 32, sub="u", email="u@x.example", org_id="acme", role="org_owner")
    p = v.verify(tok)
    assert p.is_owner and p.can("audit:read") and p.can("audit:export") and p.org_id == "acme"
    assert _status(v, mint_token("t" * 32, sub="u", email="u@x.example", org_id="a", role="org_owner")) == 401
    assert _status(v, mint_token("s" * 32, sub="u", email="e@x.example", org_id="a", role="org_owner",
                                 ttl_seconds=-120)) == 401


def test_rs256_with_pem_and_jwks(rsa_keys: tuple[Any, Path, Path]) -> None:
    key, pem, jwks = rsa_keys
    tok = jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": "k1"})
    for s in (Settings(jwt_public_key_file=str(pem)), Settings(jwt_jwks_file=str(jwks))):
        p = TokenVerifier(s).verify(tok)
        assert p.workspaces == ("w1",) and not p.is_owner and p.permissions == frozenset({"audit:read"})
    # unknown kid with a JWKS only: refused
    other = jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": "nope"})
    assert _status(TokenVerifier(Settings(jwt_jwks_file=str(jwks))), other) == 401
    # another key pair: refused
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = jwt.encode(_claims(), stranger, algorithm="RS256")
    assert _status(TokenVerifier(Settings(jwt_public_key_file=str(pem))), bad) == 401


def test_no_algorithm_confusion(rsa_keys: tuple[Any, Path, Path]) -> None:
    _, pem, _ = rsa_keys
    v = TokenVerifier(Settings(jwt_public_key_file=str(pem)))
    # HS256 "signed" with the public key text must not pass on an RS256-only server
    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).decode().rstrip("=")

    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(_claims()).encode())
    sig = hmac.new(pem.read_bytes(), signing.encode(), hashlib.sha256).digest()
    forged = signing + "." + b64(sig)
    assert _status(v, forged) == 401
    assert _status(v, jwt.encode(_claims(), None, algorithm="none")) == 401  # type: ignore[arg-type]


def test_claim_types_per_contract() -> None:
    v = TokenVerifier(Settings(jwt_secret="s" * 32))

    def tok(claims: dict[str, Any]) -> str:
        return jwt.encode(claims, "s" * 32, algorithm="HS256")

    no_email = v.verify(tok({k: x for k, x in _claims().items() if k != "email"}))
    assert isinstance(no_email, Principal) and no_email.email == "" and no_email.workspaces == ("w1",)
    nulls = v.verify(tok(_claims(workspaces=None, permissions=None)))
    assert nulls.workspaces == () and nulls.permissions == frozenset()
    for bad in (_claims(email=""), _claims(email=7), _claims(sub=""), _claims(org_id=["acme"]),
                {k: x for k, x in _claims().items() if k != "sub"}):
        assert _status(v, tok(bad)) == 401, bad


def test_leeway_and_unconfigured_server() -> None:
    v = TokenVerifier(Settings(jwt_secret="s" * 32, jwt_leeway_seconds=30))
    assert isinstance(_status(v, jwt.encode(_claims(exp=int(time.time()) - 10), "s" * 32)), Principal)
    assert _status(v, jwt.encode(_claims(exp=int(time.time()) - 60), "s" * 32)) == 401
    assert _status(TokenVerifier(Settings()), jwt.encode(_claims(), "s" * 32)) == 401


def test_cursor_roundtrip_and_tamper() -> None:
    ts = datetime(2026, 11, 21, 9, 14, 3, 512000, tzinfo=UTC)
    eid = uuid.uuid4()
    keys = ServerKeys("auth-test-server-secret-0123456789abcdef")
    c = cursor.encode(ts, eid, keys)
    assert cursor.decode(c, keys) == (ts, eid)
    for bad in ("", "x", c[:-1], c.upper(), "eyJ2IjoxfQ", "A" * 600):
        with pytest.raises(ApiError) as ei:
            cursor.decode(bad, keys)
        assert ei.value.status == 400 and ei.value.field == "cursor" and ei.value.code == "invalid_cursor"


def test_scoped_query_guards() -> None:
    owner = Principal("u", "u@x.example", "acme", "org_owner", (), frozenset({"audit:read"}))
    admin = Principal("u", "u@x.example", "acme", "workspace_admin", ("w1",), frozenset({"audit:read"}))
    assert ScopedQuery(owner).where() == "(org_id = {s_org:String})"
    sq = ScopedQuery(admin)
    assert "workspace_id IN {s_ws:Array(String)}" in sq.where() and sq.params["s_ws"] == ["w1"]
    with pytest.raises(ValueError):
        sq.add("x = {a:String}")  # placeholder without a parameter
    with pytest.raises(ValueError):
        sq.add("x = 1", a="v")  # parameter without a placeholder
    with pytest.raises(ValueError):
        sq.add("org_id = {s_org:String}", s_org="globex")  # cannot rebind the tenant
    with pytest.raises(TypeError):
        ScopedQuery({"org_id": "acme"})  # type: ignore[arg-type]
    assert like_contains("100%_a\\B") == "%100\\%\\_a\\\\b%"


def test_search_expression_is_the_index_expression() -> None:
    """ClickHouse uses idx_search only for the very same expression: the migrations must carry SEARCH_EXPR verbatim."""
    migrations = Path(__file__).resolve().parents[2] / "schemas" / "migrations"
    for name in ("0001_events.sql", "0021_search_index.sql"):
        sql = (migrations / name).read_text(encoding="utf-8")
        assert f"INDEX idx_search {SEARCH_EXPR}" in sql or f"INDEX IF NOT EXISTS idx_search {SEARCH_EXPR}" in sql, name


# ----- aud / iss, time-claim types, blank workspaces, claims that cannot be recorded --------------------------------
def _hs(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, "s" * 32, algorithm="HS256")


def _refusal(v: TokenVerifier, tok: str) -> ApiError:
    with pytest.raises(ApiError) as ei:
        v.verify(tok)
    assert ei.value.status == 401 and ei.value.headers == {"WWW-Authenticate": "Bearer"}
    return ei.value


@pytest.mark.parametrize("aud_setting", [None, "", "audit-api"])
@pytest.mark.parametrize("iss_setting", [None, "", "https://idp.example"])
def test_audience_and_issuer_matrix(aud_setting: str | None, iss_setting: str | None) -> None:
    """Unset (or empty) settings: aud/iss are not looked at. Set: required and must match."""
    v = TokenVerifier(Settings(jwt_secret="s" * 32, jwt_audience=aud_setting, jwt_issuer=iss_setting))
    good = {"aud": "audit-api", "iss": "https://idp.example"}
    assert isinstance(v.verify(_hs(_claims(**good))), Principal)
    # a list audience containing ours is the RFC 7519 form and is accepted
    assert isinstance(v.verify(_hs(_claims(aud=["other", "audit-api"], iss="https://idp.example"))), Principal)
    variants: dict[str, dict[str, Any]] = {
        "no aud": {k: x for k, x in _claims(**good).items() if k != "aud"},
        "wrong aud": _claims(aud="another-api", iss="https://idp.example"),
        "no iss": {k: x for k, x in _claims(**good).items() if k != "iss"},
        "wrong iss": _claims(aud="audit-api", iss="https://evil.example"),
    }
    for name, claims in variants.items():
        checked = "aud" if "aud" in name else "iss"
        enforced = bool(aud_setting if checked == "aud" else iss_setting)
        tok = _hs(claims)
        if not enforced:
            assert isinstance(v.verify(tok), Principal), name
            continue
        message = _refusal(v, tok).message
        assert f"claim '{checked}'" in message, (name, message)
        assert ("missing" in message) == name.startswith("no "), (name, message)


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["9999999999", "0", "", True, False, None, [1], {"t": 1}, float("inf"),
                                   float("nan")])
def test_time_claims_must_be_json_numbers(claim: str, value: Any) -> None:
    v = TokenVerifier(Settings(jwt_secret="s" * 32))
    err = _refusal(v, _hs(_claims(**{claim: value})))
    assert err.message == f"invalid token: claim {claim!r} must be a number", err.message


def test_time_claims_as_numbers_are_accepted_and_still_checked() -> None:
    v = TokenVerifier(Settings(jwt_secret="s" * 32, jwt_leeway_seconds=0))
    now = time.time()
    p = v.verify(_hs(_claims(exp=now + 60.5, nbf=int(now) - 5, iat=now - 5.25)))
    assert isinstance(p, Principal)
    assert "expired" in _refusal(v, _hs(_claims(exp=now - 5.5))).message
    assert "not yet valid" in _refusal(v, _hs(_claims(nbf=now + 120))).message
    assert "not yet valid" in _refusal(v, _hs(_claims(iat=now + 120))).message


def test_blank_workspace_ids_are_dropped() -> None:
    v = TokenVerifier(Settings(jwt_secret="s" * 32))
    assert v.verify(_hs(_claims(workspaces=["", "w1"]))).workspaces == ("w1",)
    assert v.verify(_hs(_claims(workspaces=["  ", "w1", "\t", "w2"]))).workspaces == ("w1", "w2")
    only_blank = v.verify(_hs(_claims(workspaces=["", " "])))
    assert only_blank.workspaces == () and not only_blank.is_owner
    # and a workspace admin whose list ends up empty is scoped to nothing
    sq = ScopedQuery(only_blank)
    assert sq.params["s_ws"] == []


@pytest.mark.parametrize(("over", "claim"), [
    ({"email": "not-an-email"}, "email"),
    ({"email": "  "}, "email"),
    ({"email": "a@b"}, "email"),
    ({"email": "x" * 250 + "@acme.example"}, "email"),
    ({"sub": "s" * 257}, "sub"),
    ({"sub": "\x00"}, "sub"),
    ({"org_id": "o" * 129}, "org_id"),
])
def test_claims_that_cannot_be_recorded_are_refused(over: dict[str, Any], claim: str) -> None:
    """A read is recorded as an audit event of the caller: claims that event would refuse are refused here."""
    v = TokenVerifier(Settings(jwt_secret="s" * 32))
    err = _refusal(v, _hs(_claims(**over)))
    assert err.message.startswith(f"invalid token: claim {claim!r} "), err.message


def test_claims_at_the_event_limits_are_accepted() -> None:
    v = TokenVerifier(Settings(jwt_secret="s" * 32))
    p = v.verify(_hs(_claims(sub="s" * 256, org_id="o" * 128, email="first.last+tag@mail.acme.example")))
    assert len(p.sub) == 256 and len(p.org_id) == 128
    assert v.verify(_hs({k: x for k, x in _claims().items() if k != "email"})).email == ""


def test_current_principal_consults_the_rate_limiter() -> None:
    """The app's ``rate_limiter`` sees every verified caller and may refuse it; bad tokens never reach it."""
    seen: list[Principal] = []

    class Limiter:
        def check(self, principal: Principal) -> None:
            seen.append(principal)
            if len(seen) > 2:
                raise ApiError(429, "slow down", headers={"Retry-After": "1"})

    app = FastAPI()
    install_error_handlers(app)
    app.state.verifier = TokenVerifier(Settings(jwt_secret="s" * 32))
    app.state.rate_limiter = Limiter()

    @app.get("/who")
    def who(p: ReadPrincipal) -> dict[str, str]:
        return {"sub": p.sub}

    with TestClient(app) as c:
        h = {"Authorization": f"Bearer {_hs(_claims())}"}
        assert c.get("/who", headers=h).json() == {"sub": "u1"}
        assert c.get("/who", headers=h).status_code == 200
        r = c.get("/who", headers=h)
        assert r.status_code == 429 and r.json()["error"]["message"] == "slow down"
        assert c.get("/who", headers={"Authorization": "Bearer garbage"}).status_code == 401
    assert [p.sub for p in seen] == ["u1", "u1", "u1"]
