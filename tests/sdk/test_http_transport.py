"""The SDK's HTTP transport against a scripted ingest endpoint on loopback (the real API is exercised in
tests/integration/test_up.py): batching into NDJSON, per-event rejections, 429/503 retried with Retry-After and the
same body, a refusal failing at once, the token never in a message, and from_env choosing HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from auditlogkit import AuditProducer, DeliveryFailed, InvalidEvent, audit_context
from auditlogkit.http import HttpTransport
from auditlogkit.settings import ProducerSettings

TOKEN = "svc-token-0123456789-abcdef"
Reply = tuple[int, dict[str, str], dict[str, Any]]


class Ingest:
    """Records each POST (headers, NDJSON lines, time) and answers with ``reply(n, lines)``."""

    def __init__(self, reply: Callable[[int, list[dict[str, Any]]], Reply]) -> None:
        self.posts: list[tuple[dict[str, str], list[dict[str, Any]], float]] = []
        self.reply = reply
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                lines = [json.loads(x) for x in body.splitlines() if x.strip()]
                outer.posts.append((dict(self.headers), lines, time.monotonic()))
                status, headers, doc = outer.reply(len(outer.posts), lines)
                data = json.dumps(doc).encode()
                self.send_response(status)
                for k, v in {**headers, "Content-Type": "application/json", "Content-Length": str(len(data))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a: object) -> None:
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def accept_all(n: int, lines: list[dict[str, Any]]) -> Reply:
    return 202, {}, {"accepted": len(lines), "rejected": []}


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    i = Ingest(accept_all)
    yield i
    i.close()


def producer(url: str, **kw: Any) -> AuditProducer:
    return AuditProducer(transport=HttpTransport(url, TOKEN, **kw), source="billing")


def event(i: int) -> dict[str, Any]:
    return {"action": "vm.delete", "target": {"type": "vm", "id": f"vm-{i}"}}


async def test_events_go_in_batches_with_the_token_and_the_api_rejections_per_event(ingest: Ingest) -> None:
    ingest.reply = lambda n, lines: (202, {}, {"accepted": len(lines) - 1,
                                               "rejected": [{"index": 1, "field": "org_id", "reason": "not yours"}]})
    async with producer(ingest.url, linger_ms=100) as audit:
        with audit_context(org_id="acme", actor_id="u-1", actor_type="user"):
            futs = [await audit.send(event(i)) for i in range(3)]
        results = [await f if i != 1 else None for i, f in enumerate(futs)]
        with pytest.raises(InvalidEvent) as rejected:
            await futs[1]
    assert results == [None, None, None] and rejected.value.field == "org_id"
    assert len(ingest.posts) == 1
    headers, lines, _ = ingest.posts[0]
    assert headers["Authorization"] == f"Bearer {TOKEN}" and headers["Content-Type"] == "application/x-ndjson"
    assert [x["target"]["id"] for x in lines] == ["vm-0", "vm-1", "vm-2"]
    assert all(x["event_id"] and x["occurred_at"] and x["source"] == "billing" for x in lines)


async def test_429_and_503_are_retried_with_the_same_body_after_retry_after(ingest: Ingest) -> None:
    ingest.reply = lambda n, lines: ((429, {"Retry-After": "1"}, {"error": {"code": "rate_limited", "message": "slow"}})
                                     if n == 1 else (503, {}, {"error": {"message": "broker"}}) if n == 2
                                     else accept_all(n, lines))
    async with producer(ingest.url) as audit:
        with audit_context(org_id="acme", actor_id="u-1", actor_type="user"):
            await audit.send_and_wait(event(1))
    assert len(ingest.posts) == 3
    assert ingest.posts[0][1] == ingest.posts[1][1] == ingest.posts[2][1]  # the same event_id each time
    assert ingest.posts[1][2] - ingest.posts[0][2] >= 0.95  # Retry-After honoured


async def test_a_refusal_fails_at_once_and_the_token_is_in_no_message(ingest: Ingest) -> None:
    ingest.reply = lambda n, lines: (401, {}, {"error": {"code": "unauthorized", "message": "token expired"}})
    errors: list[BaseException] = []
    audit = AuditProducer(transport=HttpTransport(ingest.url, TOKEN), on_error=lambda ev, exc: errors.append(exc))
    async with audit:
        with audit_context(org_id="acme", actor_id="u-1", actor_type="user"):
            fut = await audit.send(event(1))
        with pytest.raises(DeliveryFailed) as failed:
            await fut
    assert failed.value.status == 401 and "token expired" in str(failed.value)
    assert len(ingest.posts) == 1 and errors == [failed.value]
    assert TOKEN not in str(failed.value) and TOKEN not in repr(audit.transport)


async def test_an_unreachable_api_fails_after_the_delivery_timeout() -> None:
    async with producer("http://127.0.0.1:9", delivery_timeout_s=1.0) as audit:
        with audit_context(org_id="acme", actor_id="u-1", actor_type="user"):
            t0 = time.monotonic()
            with pytest.raises(DeliveryFailed, match="unreachable"):
                await audit.send_and_wait(event(1))
    assert time.monotonic() - t0 < 5


def test_from_env_chooses_http_with_a_token_and_refuses_a_url_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITLOG_INGEST_URL", "https://audit.example.com/")
    monkeypatch.setenv("AUDITLOG_INGEST_TOKEN", TOKEN)
    monkeypatch.setenv("AUDITLOG_SOURCE", "billing")
    audit = AuditProducer.from_env()
    assert isinstance(audit.transport, HttpTransport) and audit.source == "billing"
    assert audit.transport.endpoint == "https://audit.example.com/v1/ingest"
    monkeypatch.delenv("AUDITLOG_INGEST_TOKEN")
    with pytest.raises(ValueError, match="AUDITLOG_INGEST_TOKEN"):
        ProducerSettings()


async def test_an_event_sent_long_after_start_goes_out_after_the_linger(ingest: Ingest) -> None:
    """The sender waits idle between events: the first one after a quiet spell must wake it (it once waited for a
    full batch)."""
    async with producer(ingest.url, linger_ms=50) as audit:
        await asyncio.sleep(0.3)
        with audit_context(org_id="acme", actor_id="u-1", actor_type="user"):
            t0 = time.monotonic()
            await asyncio.wait_for(audit.send_and_wait(event(1)), 5)
            assert time.monotonic() - t0 < 2
            await asyncio.sleep(0.3)
            await asyncio.wait_for(audit.send_and_wait(event(2)), 5)
    assert len(ingest.posts) == 2
