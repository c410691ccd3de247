"""RS256 keys from ``AUDITLOG_JWT_JWKS_URL``, against a real HTTP server on 127.0.0.1 serving a JWKS: key rotation
(a token with a new ``kid`` verifies once the server publishes the key), a flood of made-up ``kid``s costs the
identity provider at most one request per refresh interval, a failed or hanging fetch keeps the cached keys and
gives up within the timeout, and the whole API accepts such tokens."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.security.auth import TokenVerifier
from auditlogkit.query_api.security.principal import Principal
from auditlogkit.server.settings import Settings

CLAIMS = {"sub": "u1", "email": "u1@acme.example", "org_id": "acme", "role": "org_owner",
          "permissions": ["audit:read"]}


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid, "alg": "RS256",
            "use": "sig"}


def token(key: rsa.RSAPrivateKey, kid: str | None, **over: Any) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode({**CLAIMS, "exp": int(time.time()) + 300, **over}, key, algorithm="RS256", headers=headers)


@dataclass
class IdP:
    """What the JWKS server serves, and what it saw."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "ok"  # ok | fail (HTTP 500) | garbage (not a JWKS) | hang (no answer for 30 s)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def count(self) -> int:
        with self.lock:
            return self.requests


@pytest.fixture
def idp() -> Iterator[IdP]:
    state = IdP()
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.requests += 1
                mode, body = state.mode, json.dumps({"keys": list(state.keys)}).encode()
            if mode == "hang":
                stop.wait(30)
                return
            if mode == "fail":
                self.send_error(500)
                return
            if mode == "garbage":
                body = b"<html>maintenance</html>"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield state
    stop.set()
    server.shutdown()
    server.server_close()


def outcome(v: TokenVerifier, tok: str) -> int | Principal:
    try:
        return v.verify(tok)
    except ApiError as exc:
        return exc.status


def verifier(idp: IdP, **over: Any) -> TokenVerifier:
    return TokenVerifier(Settings(jwt_jwks_url=idp.url, **over))


def test_keys_are_fetched_and_cached(idp: IdP) -> None:
    k1 = new_key()
    idp.keys = [jwk(k1, "k1")]
    v = verifier(idp)
    assert v.configured
    for _ in range(20):
        p = outcome(v, token(k1, "k1"))
        assert isinstance(p, Principal) and p.org_id == "acme"
    assert idp.count() == 1, "the key set is cached, not fetched per token"
    assert outcome(v, token(new_key(), "k1")) == 401  # another key under a known kid: the signature fails
    assert outcome(v, jwt.encode({**CLAIMS, "exp": int(time.time()) + 60}, "s" * 32, algorithm="HS256",
                                 headers={"kid": "k1"})) == 401  # no HS256 on a JWKS-only server


def test_a_rotated_key_verifies_once_the_idp_publishes_it(idp: IdP) -> None:
    k1, k2 = new_key(), new_key()
    idp.keys = [jwk(k1, "k1")]
    v = verifier(idp, jwt_jwks_refresh_seconds=1)
    assert isinstance(outcome(v, token(k1, "k1")), Principal)
    assert outcome(v, token(k2, "k2")) == 401  # not published yet
    idp.keys = [jwk(k1, "k1"), jwk(k2, "k2")]  # rotation: the IdP publishes the new key, then signs with it
    time.sleep(1.1)
    assert isinstance(outcome(v, token(k2, "k2")), Principal)  # unknown kid -> one refetch -> verifies
    assert isinstance(outcome(v, token(k1, "k1")), Principal)
    n = idp.count()
    assert isinstance(outcome(v, token(k2, "k2")), Principal) and idp.count() == n  # cached now


def test_a_flood_of_unknown_kids_refetches_at_most_once_per_interval(idp: IdP) -> None:
    k1 = new_key()
    idp.keys = [jwk(k1, "k1")]
    interval = 1.0
    v = verifier(idp, jwt_jwks_refresh_seconds=interval)
    assert isinstance(outcome(v, token(k1, "k1")), Principal)
    attacker = new_key()
    forged = [token(attacker, f"random-{uuid.uuid4().hex}") for _ in range(64)]  # each with a kid of its own
    t0 = time.monotonic()
    before = idp.count()
    results: list[int | Principal] = []
    with ThreadPoolExecutor(16) as pool:
        while time.monotonic() - t0 < 2.5:
            results += pool.map(lambda tok: outcome(v, tok), forged)
    elapsed = time.monotonic() - t0
    assert all(r == 401 for r in results)
    refetches = idp.count() - before
    assert len(results) >= 256 and refetches <= int(elapsed / interval) + 1, (len(results), refetches, elapsed)
    assert isinstance(outcome(v, token(k1, "k1")), Principal)  # the real key still works


@pytest.mark.parametrize("mode", ["fail", "garbage"])
def test_a_failed_fetch_keeps_the_cached_keys(idp: IdP, mode: str) -> None:
    k1, k2 = new_key(), new_key()
    idp.keys = [jwk(k1, "k1")]
    v = verifier(idp, jwt_jwks_refresh_seconds=1, jwt_jwks_max_age_seconds=1)
    assert isinstance(outcome(v, token(k1, "k1")), Principal)
    idp.mode = mode
    time.sleep(1.1)
    before = idp.count()
    assert isinstance(outcome(v, token(k1, "k1")), Principal)  # stale: refetch fails, the cached key still verifies
    assert idp.count() == before + 1
    assert outcome(v, token(k2, "k2")) == 401
    idp.keys, idp.mode = [jwk(k2, "k2")], "ok"  # the IdP is back and has dropped k1
    time.sleep(1.1)
    assert isinstance(outcome(v, token(k2, "k2")), Principal)
    assert outcome(v, token(k1, "k1")) == 401  # a key the IdP removed stops verifying after the refresh


def test_a_hanging_idp_costs_at_most_the_timeout(idp: IdP) -> None:
    from auditlogkit.query_api.security.jwks import JwksCache

    k1 = new_key()
    idp.mode = "hang"
    cache = JwksCache(idp.url, min_interval=1, max_age=300, timeout=0.5)
    t0 = time.monotonic()
    assert cache.key("k1") is None
    assert time.monotonic() - t0 < 2.5
    idp.mode, idp.keys = "ok", [jwk(k1, "k1")]
    time.sleep(1.1)
    assert cache.key("k1") is not None


def test_the_api_accepts_tokens_signed_with_a_key_of_the_url(idp: IdP, tmp_path: Any) -> None:
    from fastapi.testclient import TestClient

    from auditlogkit.query_api.core.app import create_app
    from auditlogkit.server.store import Store

    k1 = new_key()
    idp.keys = [jwk(k1, "k1")]
    s = Settings(data_dir=tmp_path, jwt_jwks_url=idp.url, clickhouse_url="http://127.0.0.1:9")  # never connected
    app = create_app(s, Store.from_settings(s))
    with TestClient(app) as c:
        bad = c.get("/v1/catalog", headers={"Authorization": f"Bearer {token(new_key(), 'k1')}"})
        assert bad.status_code == 401
        good = c.get("/v1/catalog", headers={"Authorization": f"Bearer {token(k1, 'k1')}"})
        assert good.status_code == 200, good.text


def test_a_hanging_idp_never_stalls_the_event_loop(idp: IdP, tmp_path: Any) -> None:
    """Fetches happen on the threadpool: while a service token's unknown kid waits for a hanging provider (up to
    the 5 s timeout), ``/healthz`` and a read with a cached key are answered at once."""
    from auditlogkit.query_api.core.app import create_app
    from auditlogkit.server.store import Store
    from tests.integration.live_server import live_server

    k1 = new_key()
    idp.keys = [jwk(k1, "k1")]
    s = Settings(data_dir=tmp_path, jwt_jwks_url=idp.url, clickhouse_url="http://127.0.0.1:9",  # never connected
                 jwt_jwks_refresh_seconds=1)
    app = create_app(s, Store.from_settings(s))
    assert isinstance(outcome(app.state.verifier, token(k1, "k1")), Principal)  # k1 cached
    idp.mode = "hang"
    time.sleep(1.1)  # a refetch is due at the next unknown kid
    service = token(new_key(), "rotated", role="service", permissions=["audit:write"], write_orgs=["acme"])
    with live_server(app) as base, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{base}/v1/ingest", json=[], timeout=30,
                              headers={"Authorization": f"Bearer {service}"})
        time.sleep(0.5)  # the ingest call is now waiting for the provider
        assert not pending.done()
        t0 = time.monotonic()
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        r = httpx.get(f"{base}/v1/catalog", headers={"Authorization": f"Bearer {token(k1, 'k1')}"}, timeout=10)
        assert r.status_code == 200, r.text
        assert time.monotonic() - t0 < 1.5
        assert pending.result().status_code == 401
