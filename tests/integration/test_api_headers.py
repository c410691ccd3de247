"""Browser-facing hardening of the API (API.md "Limits and security"): the security headers on every kind of
response, a streamed body passed through unbuffered, ``/v1/catalog`` behind a token, and ``/docs`` served from
this app only (and switched off with ``api_docs``)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from auditlogkit.query_api.core.app import create_app
from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.security.headers import BrowserSecurityMiddleware
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.test_api_helpers import app_client, auth, store_events, token

CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
FIXED = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "x-frame-options": "DENY"}


@pytest.fixture
def settings(tmp_path: Path, store: Store) -> Settings:
    """Settings of an API without Kafka (no self-audit producer is started by these tests)."""
    return Settings(data_dir=tmp_path, clickhouse_url=store.url, clickhouse_database=store.database,
                    jwt_secret="headers-secret-0123456789abcdef0123456789")


def assert_secured(r: object, csp: str = CSP) -> None:
    headers = r.headers  # type: ignore[attr-defined]
    where = f"{r.request.method} {r.request.url.path} -> {r.status_code}"  # type: ignore[attr-defined]
    assert headers.get("content-security-policy") == csp, where
    for name, value in FIXED.items():
        assert headers.get(name) == value, f"{where}: {name}"
    assert len(headers.get_list("content-security-policy")) == 1, where


@pytest.fixture
def client(settings: Settings, store: Store) -> Iterator[TestClient]:
    """The real app plus two routes that fail on purpose: an unhandled exception (500) and a 429."""
    app: FastAPI = create_app(settings, store)

    def boom() -> None:
        raise RuntimeError("unhandled on purpose")

    def busy() -> None:
        raise ApiError(429, "slow down", headers={"Retry-After": "3"})

    app.add_api_route("/test-boom", boom)
    app.add_api_route("/test-busy", busy)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_every_kind_of_response_carries_the_security_headers(client: TestClient, settings: Settings,
                                                              store: Store) -> None:
    owner = auth(token(settings))
    store_events(store, [make_event(org_id="acme")])
    ok = [client.get("/"), client.get("/static/js/main.js"), client.get("/static/css/app.css"),
          client.get("/v1/events", headers=owner), client.get("/v1/catalog", headers=owner), client.get("/healthz"),
          client.get("/metrics"), client.get("/openapi.json")]
    for r in ok:
        assert r.status_code == 200, (r.request.url, r.text)
        assert_secured(r)
    errors = {401: client.get("/v1/events"), 404: client.get("/v1/nope"), 405: client.post("/v1/events"),
              422: client.get("/v1/events", headers=owner, params={"status": "MAYBE"}),
              429: client.get("/test-busy"), 500: client.get("/test-boom")}
    for status, r in errors.items():
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"], r.text
        assert_secured(r)
    assert errors[429].headers["retry-after"] == "3"
    assert errors[401].headers["www-authenticate"] == "Bearer"


def test_a_streamed_export_carries_the_security_headers(client: TestClient, settings: Settings,
                                                          store: Store) -> None:
    store_events(store, [make_event(org_id="acme", description="exported through the middleware")])
    r = client.get("/v1/events/export", headers=auth(token(settings)), params={"format": "ndjson"})
    assert r.status_code == 200, r.text
    assert "exported through the middleware" in r.text  # the whole stream went through
    assert_secured(r)


def test_docs_allow_data_images_only_for_themselves(client: TestClient) -> None:
    """Swagger UI's stylesheet draws icons as data: images: /docs alone gets ``img-src 'self' data:``."""
    for path in ("/docs", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert_secured(r, f"{CSP}; img-src 'self' data:")
    assert_secured(client.get("/docsx"))  # not under /docs: the strict policy


def test_a_streamed_body_is_passed_on_chunk_by_chunk() -> None:
    """The middleware forwards each body message as it comes: the inner app sends its second chunk only after
    the client received the first one (a buffering middleware would deadlock here)."""
    first_seen = asyncio.Event()
    received: list[Message] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"x-frame-options", b"SAMEORIGIN")]})
        await send({"type": "http.response.body", "body": b"one\n", "more_body": True})
        await asyncio.wait_for(first_seen.wait(), 5)
        await send({"type": "http.response.body", "body": b"two\n", "more_body": False})

    async def send(message: Message) -> None:
        received.append(message)
        if message.get("body") == b"one\n":
            first_seen.set()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    mw = BrowserSecurityMiddleware(inner, docs=True)
    scope: Scope = {"type": "http", "method": "GET", "path": "/v1/events/export", "headers": []}
    asyncio.run(mw(scope, receive, send))
    assert [m.get("body") for m in received[1:]] == [b"one\n", b"two\n"]
    headers = dict(received[0]["headers"])
    assert headers[b"content-security-policy"] == CSP.encode()
    assert headers[b"x-frame-options"] == b"DENY"  # replaces what the route set, never doubles it
    assert [k for k, _ in received[0]["headers"]].count(b"x-frame-options") == 1


def test_catalog_needs_a_token(settings: Settings, store: Store) -> None:
    with app_client(settings, store) as c:
        r = c.get("/v1/catalog")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
        assert r.headers["www-authenticate"] == "Bearer"
        r = c.get("/v1/catalog", headers={"Authorization": "Bearer not-a-jwt"})
        assert r.status_code == 401, r.text
        r = c.get("/v1/catalog", headers=auth(token(settings, permissions=("audit:export",))))
        assert r.status_code == 403 and "audit:read" in r.json()["error"]["message"], r.text
        r = c.get("/v1/catalog", headers=auth(token(settings, role="workspace_admin", workspaces=["w1"],
                                                    permissions=("audit:read",))))
        assert r.status_code == 200 and r.json()["scopes"], r.text
        spec = c.get("/openapi.json").json()["paths"]["/v1/catalog"]["get"]
        assert "401" in spec["responses"] and spec.get("security"), spec


def test_docs_are_served_from_this_app_only(settings: Settings, store: Store) -> None:
    with app_client(settings, store) as c:
        r = c.get("/docs")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        html = r.text
        urls = re.findall(r'\b(?:src|href)="([^"]*)"', html)
        assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
        assert "style=" not in html and not re.search(r"\son[a-z]+=", html)
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S)
        assert scripts and all('src="' in attrs and not body.strip() for attrs, body in scripts), scripts
        for u in urls:
            a = c.get(u)
            assert a.status_code == 200, u
            if u.endswith(".js"):
                assert "javascript" in a.headers["content-type"], (u, a.headers["content-type"])
        assert "SwaggerUIBundle" in c.get("/docs/assets/swagger-ui-bundle.js").text
        for name in ("redoc.standalone.js", "favicon.png", "..%2F__init__.py", "..%2F..%2Fapp.py"):
            assert c.get(f"/docs/assets/{name}").status_code == 404, name
        assert c.get("/redoc").status_code == 404


def test_api_docs_off_hides_docs_and_openapi(settings: Settings, store: Store) -> None:
    with app_client(settings.model_copy(update={"api_docs": False}), store) as c:
        for path in ("/docs", "/docs/assets/swagger-ui-bundle.js", "/openapi.json", "/redoc"):
            r = c.get(path)
            assert r.status_code == 404, path
            assert r.json()["error"]["code"] == "not_found", r.text
            assert_secured(r)  # the strict policy: no data: images without docs
        assert c.get("/healthz").status_code == 200
