"""The request context an SDK event is filled from: precedence (the event wins), nesting, isolation between
concurrent requests, the catalog's place of an action, and the ASGI/WSGI middleware that open one per request."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
import pytest

from auditlogkit import AuditProducer, audit_context, bind
from auditlogkit.context import current, fill
from auditlogkit.middleware import AuditContextMiddleware, AuditContextWSGIMiddleware
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.testing import FakeTransport, fake_producer

CAT = get_catalog()


def test_the_event_wins_over_the_context_and_the_catalog_places_the_action() -> None:
    with audit_context(org_id="acme", actor_id="u-1", actor_type="user", ip="10.0.0.1", request_id="r-1"):
        got = fill({"action": "vm.delete", "actor": {"id": "u-2", "type": "service"}, "request_id": "mine"}, CAT,
                   source="billing")
    assert got["org_id"] == "acme" and got["request_id"] == "mine" and got["source"] == "billing"
    assert got["actor"] == {"id": "u-2", "type": "service", "ip": "10.0.0.1"}
    assert (got["scope"], got["category"], got["status"]) == ("service", "vm", "SUCCESS")
    assert fill({"action": "no.such"}, CAT) == {"action": "no.such", "status": "SUCCESS"}  # validation names it
    assert current() is None


async def test_concurrent_requests_never_see_each_others_actor() -> None:
    audit, fake = fake_producer(source="svc")
    await audit.start()

    async def request(user: str) -> None:
        with audit_context(org_id="acme", ip="192.0.2.7"):
            await asyncio.sleep(0)
            bind(actor_id=user, actor_type="user")
            await asyncio.sleep(0.01)
            await audit.send_and_wait(action="vm.delete", target={"type": "vm", "id": f"vm-of-{user}"})

    await asyncio.gather(*(request(f"u-{i}") for i in range(20)))
    assert len(fake.events) == 20
    assert all(e.target.id == f"vm-of-{e.actor.id}" and e.source == "svc" for e in fake.events)


async def test_an_invalid_event_is_refused_before_anything_is_sent() -> None:
    audit, fake = fake_producer()
    with pytest.raises(ValueError, match="org_id"):
        await audit.send(action="vm.delete", actor={"id": "u", "type": "user"})
    with audit_context(org_id="acme", actor_id="u", actor_type="user"), pytest.raises(ValueError, match="category"):
        await audit.send(scope="organization", category="audit_log", action="audit_log.export")  # reserved
    assert fake.events == []


async def test_a_failed_delivery_reaches_on_error() -> None:
    seen: list[tuple[str, str]] = []
    fake = FakeTransport()
    audit = AuditProducer(transport=fake, on_error=lambda ev, exc: seen.append((ev.action, str(exc))))
    fake.fail_with = ConnectionError("broker gone")
    with audit_context(org_id="acme", actor_id="u", actor_type="user"):
        fut = await audit.send(action="vm.delete")
    with pytest.raises(ConnectionError):
        await fut
    await asyncio.sleep(0)
    assert seen == [("vm.delete", "broker gone")]


async def test_asgi_middleware_fills_address_agent_and_request_id() -> None:
    audit, fake = fake_producer()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        bind(org_id="acme", actor_id="u-9", actor_type="user")
        await audit.send_and_wait(action="vm.delete")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = AuditContextMiddleware(app, trusted_proxies=["127.0.0.0/8"])  # type: ignore[arg-type]
    await audit.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped, client=("127.0.0.1", 5000)),
                                 base_url="http://t") as c:
        r = await c.get("/", headers={"User-Agent": "curl/8", "X-Forwarded-For": "198.51.100.4, 127.0.0.2",
                                      "X-Request-ID": "req-42"})
        forged = await c.get("/", headers={"X-Request-ID": "bad id\nwith newline" * 10})
    ev = fake.events[0]
    assert (ev.actor.ip, ev.actor.user_agent, ev.request_id) == ("198.51.100.4", "curl/8", "req-42")
    assert r.headers["x-request-id"] == "req-42"
    assert forged.headers["x-request-id"] == fake.events[1].request_id != "req-42"
    assert len(fake.events[1].request_id or "") == 32  # a new one, not the hostile header


def test_wsgi_middleware_believes_forwarded_for_only_from_a_trusted_proxy() -> None:
    audit_events: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        ctx = current()
        audit_events.append(ctx)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = AuditContextWSGIMiddleware(app, trusted_proxies=["10.0.0.0/8"])
    for peer, expected in (("10.1.2.3", "203.0.113.9"), ("198.51.100.1", "198.51.100.1")):
        headers: list[tuple[str, str]] = []
        environ = {"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": "203.0.113.9", "HTTP_USER_AGENT": "ua",
                   "REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": io.BytesIO()}
        body = b"".join(wrapped(environ, lambda status, h, *exc, out=headers: out.extend(h)))
        assert body == b"ok" and audit_events[-1].ip == expected and audit_events[-1].user_agent == "ua"
        assert ("X-Request-ID", audit_events[-1].request_id) in headers
    assert current() is None


def test_the_sync_producer_over_the_fake_takes_the_callers_context() -> None:
    from auditlogkit import AuditProducerSync

    fake = FakeTransport()
    audit = AuditProducerSync(transport=fake)
    try:
        with audit_context(org_id="acme", actor_id="u-sync", actor_type="user", request_id="r-9"):
            audit.send_and_wait(action="vm.delete", target={"type": "vm", "id": "vm-1"})
        with pytest.raises(ValueError, match="org_id"):  # outside the context: refused in the caller's thread
            audit.send(action="vm.delete", actor={"id": "u", "type": "user"})
    finally:
        audit.close()
    [ev] = fake.events
    assert (ev.org_id, ev.actor.id, ev.request_id) == ("acme", "u-sync", "r-9")
