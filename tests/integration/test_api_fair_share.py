"""Fair share of the API between callers: one caller's flood of store queries is capped (429 with Retry-After at
once, never a queue that others wait behind; its extra queries at once run at a lower ClickHouse priority), and
reads' self-audit acks never wait behind ``POST /v1/ingest`` traffic (their own producer)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from auditlogkit.producer import AuditProducer
from auditlogkit.query_api.cli import attach_self_audit
from auditlogkit.query_api.core.app import create_app
from auditlogkit.query_api.read import stats
from auditlogkit.query_api.security.auth import mint_token
from auditlogkit.query_api.security.self_audit import ReadAuditor, SelfAuditState
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.test_api_helpers import auth, store_events, token


def asgi(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=30)


async def test_one_callers_flood_of_queries_is_capped_and_others_are_served(
        settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store_events(store, [make_event()])
    s = settings.model_copy(update={"api_rate_per_second": 0, "api_queries_per_caller": 2})
    release = threading.Event()
    running = threading.Semaphore(0)
    priorities: list[int] = []
    real = stats.compute

    def slow_compute(*args: Any) -> Any:  # a heavy stats query: holds its query thread until released
        priorities.append(int(store.client().query("SELECT getSetting('priority')").result_rows[0][0]))
        running.release()
        release.wait(30)
        return real(*args)

    monkeypatch.setattr(stats, "compute", slow_compute)
    a, b = auth(token(s, sub="u-flood")), auth(token(s, sub="u-other"))
    async with asgi(create_app(s, store)) as c:
        heavy = [asyncio.create_task(c.get("/v1/stats", params={"start": "2000-01-01T00:00:00Z"}, headers=a))
                 for _ in range(2)]
        try:
            for _ in heavy:
                assert await asyncio.to_thread(running.acquire, True, 10)
            t0 = time.monotonic()
            for path in ("/v1/events", "/v1/stats", "/v1/actors?prefix=us"):  # every store read counts
                r = await c.get(path, headers=a)
                assert r.status_code == 429, (path, r.status_code, r.text[:200])
                assert r.json()["error"]["code"] == "too_many_queries" and int(r.headers["Retry-After"]) >= 1
            assert time.monotonic() - t0 < 2  # at once, not queued
            r = await c.get("/v1/events", headers=b)  # another caller is served meanwhile
            assert r.status_code == 200 and len(r.json()["data"]) == 1
        finally:
            release.set()
        assert [(await t).status_code for t in heavy] == [200, 200]
        assert sorted(priorities) == [1, 2]  # the caller's second query at once yields to others' first ones
        assert (await c.get("/v1/events", headers=a)).status_code == 200  # the caller's places are free again


class FakeProducer:
    """Records what it is given; ``stuck``: no ack ever comes (a producer whose queue is full of other traffic)."""

    def __init__(self, *, stuck: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.stuck = stuck
        self.started = self.stopped = False

    def _ack(self) -> asyncio.Future[None]:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.stuck:
            ack.set_result(None)
        return ack

    async def send(self, event: dict[str, Any], **_: Any) -> asyncio.Future[None]:
        self.events.append(event)
        return self._ack()

    async def send_raw(self, value: bytes, key: Any, *_: Any, **__: Any) -> asyncio.Future[None]:
        self.raw.append(value)
        return self._ack()

    def connected(self) -> bool:
        return True

    async def reachable(self) -> None:
        return None

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


async def test_reads_are_recorded_at_once_while_ingest_waits_for_its_acks(settings: Settings, store: Store) -> None:
    s = settings.model_copy(update={"api_rate_per_second": 0, "api_ingest_rate_per_second": 0,
                                    "api_ingest_ack_timeout_seconds": 20})
    ingest, audit = FakeProducer(stuck=True), FakeProducer()
    app = create_app(s, store, producer=cast(AuditProducer, ingest), audit_producer=cast(AuditProducer, audit))
    async with asgi(app) as c:
        service = mint_token(s.jwt_secret or "", sub="svc-busy", role="service", write_orgs=["acme"],
                             permissions=["audit:write"])
        posting = asyncio.create_task(c.post("/v1/ingest", content=json.dumps(make_event()), headers={
            **auth(service), "Content-Type": "application/json"}))
        while not ingest.raw:
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        r = await c.get("/v1/events", headers=auth(token(s, sub="u-reader")))
        assert r.status_code == 200 and time.monotonic() - t0 < 2
        assert not posting.done()
        posting.cancel()
    assert [e["actor"]["id"] for e in audit.events] == ["u-reader"] and not audit.raw
    assert len(ingest.raw) == 1 and not ingest.events


async def test_the_api_command_attaches_its_own_producer_for_the_self_audit() -> None:
    made: dict[str, FakeProducer] = {}

    def maker(name: str) -> Any:
        def make() -> AuditProducer:
            made[name] = FakeProducer()
            return cast(AuditProducer, made[name])
        return make

    auditor = ReadAuditor(None)
    auditor.state = SelfAuditState.CONNECTING
    app = SimpleNamespace(state=SimpleNamespace(auditor=auditor, ingest_producer=None))
    await attach_self_audit(app, maker("audit"), "kafka", make_ingest_producer=maker("ingest"))
    assert made["audit"].started and made["ingest"].started
    assert app.state.auditor.producer is made["audit"] and app.state.ingest_producer is made["ingest"]
    assert auditor.state == SelfAuditState.OK
