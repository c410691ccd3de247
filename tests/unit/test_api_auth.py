"""Token verification (HS256 / RS256 PEM / JWKS), cursor encoding, the scoping builder's guards, access logs."""

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

from auditlog.settings import Settings
from query_api import cursor
from query_api.auth import Principal, TokenVerifier, mint_token
from query_api.errors import ApiError
from query_api.scoping import SEARCH_EXPR, ScopedQuery, like_contains

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
    assert _status(v, jwt.encode(_claims(), None, algorithm="none")) == 401


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
    c = cursor.encode(ts, eid)
    assert cursor.decode(c) == (ts, eid)
    for bad in ("", "x", c[:-1], c.upper(), "eyJ2IjoxfQ", "A" * 600):
        with pytest.raises(ApiError) as ei:
            cursor.decode(bad)
        assert ei.value.status == 422 and ei.value.field == "cursor"


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
