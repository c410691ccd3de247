"""Reads are audited or refused, on a real broker that is stopped and started again."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from auditlogkit.producer import AuditProducer
from auditlogkit.query_api.core.app import create_app
from auditlogkit.server.broker import EmbeddedBroker, ensure_topics
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.test_api_helpers import auth, store_events, token


async def _topic_events(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"t-{uuid.uuid4().hex[:8]}", enable_auto_commit=False)
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=2000)
        return [json.loads(m.value) for msgs in batches.values() for m in msgs]
    finally:
        await consumer.stop()


async def test_reads_are_refused_while_the_broker_is_down_and_recorded_again_after(
        settings: Settings, store: Store, tmp_path: Path) -> None:
    ev = make_event()
    store_events(store, [ev])
    broker = EmbeddedBroker(log_file=tmp_path / "tansu.log").start()
    topic = f"audit.selfaudit.{uuid.uuid4().hex[:8]}"
    try:
        await ensure_topics(broker.bootstrap, [topic], 1)
        s = settings.model_copy(update={"api_audit_ack_timeout_seconds": 1.0, "api_rate_per_second": 0})
        producer = AuditProducer(broker.bootstrap, topic, request_timeout_ms=3000)
        await producer.start()
        app = create_app(s, store, producer=producer)
        h = auth(token(s, sub="u-sec", email="sec@acme.example"))
        reads = {"list": "/v1/events", "export": "/v1/events/export", "detail": f"/v1/events/{ev['event_id']}",
                 "stats": "/v1/stats", "actors": "/v1/actors?prefix=us", "integrity": "/v1/integrity"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            for path in reads.values():
                assert (await c.get(path, headers=h)).status_code == 200, path
            assert (await c.get("/readyz")).json()["self_audit"] == "ok"

            broker.stop()
            for name, path in reads.items():
                r = await c.get(path, headers=h)
                assert r.status_code == 503, (name, r.status_code, r.text[:200])
                assert r.json()["error"]["code"] == "audit_unavailable" and r.headers["Retry-After"]
            r = await c.get("/readyz")
            assert r.status_code == 503 and r.json()["self_audit"] == "failing"
            assert (await c.get("/healthz")).status_code == 200

            broker.start()
            await ensure_topics(broker.bootstrap, [topic], 1)
            deadline = time.monotonic() + 30
            while (await c.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "readyz still red 30 s after the broker came back"
                await asyncio.sleep(0.5)
            for name, path in reads.items():
                assert (await c.get(path, headers=h)).status_code == 200, name
            assert await app.state.auditor.flush_coalesced(everything=True) == 1  # the list repeat, folded
        await producer.stop()
        recorded = await _topic_events(broker.bootstrap, topic)  # the restarted broker holds only the new ones
        # every read served after the restart is on record (an event of a refused read that was still queued in
        # the producer may arrive too: refused reads may appear as recorded, never the reverse)
        actions = Counter(e["action"] for e in recorded if e["actor"]["id"] == "u-sec")
        assert actions >= Counter({"audit_log.list": 1, "audit_log.export": 2, "audit_log.read": 3,
                                   "audit_log.verify": 1}), actions
        detail_read = next(e for e in recorded if e["target"]["id"] == ev["event_id"])
        assert detail_read["action"] == "audit_log.read" and detail_read["detail"]["kind"] == "event"
    finally:
        broker.stop()


async def test_each_read_is_recorded_with_who_what_and_how_many(settings: Settings, store: Store,
                                                                broker: EmbeddedBroker) -> None:
    """Cursor pages are their own events with their true row counts; repeats of one live view are folded and
    published later with their count; detail, stats and autocomplete say what was read."""
    store_events(store, [make_event(description=f"e{i}") for i in range(7)])
    s = settings.model_copy(update={"api_rate_per_second": 0})
    async with AuditProducer(broker.bootstrap, s.topic) as producer:
        app = create_app(s, store, producer=producer)
        app.state.auditor.window_s = 3.0
        h = auth(token(s, sub="u-pager"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            first = (await c.get("/v1/events", params={"limit": 5}, headers=h)).json()
            second = (await c.get("/v1/events", params={"limit": 5, "cursor": first["next_cursor"]},
                                  headers=h)).json()
            assert len(first["data"]) == 5 and len(second["data"]) == 2
            for _ in range(3):  # auto-refresh of the first view: folded
                assert (await c.get("/v1/events", params={"limit": 5}, headers=h)).status_code == 200
            await asyncio.sleep(3.1)
            assert await app.state.auditor.flush_coalesced() == 1
            assert (await c.get("/v1/actors", params={"prefix": "us"}, headers=h)).status_code == 200
    got = [e for e in await _topic_events(broker.bootstrap, s.topic) if e["actor"]["id"] == "u-pager"]
    lists = [e["detail"] for e in got if e["action"] == "audit_log.list"]
    assert [(d["rows"], d["page"], d.get("coalesced")) for d in lists] == [(5, False, None), (2, True, None),
                                                                           (15, False, 3)]
    actors = next(e for e in got if e["action"] == "audit_log.read")
    assert actors["detail"]["kind"] == "actors" and actors["detail"]["prefix"] == "us"
