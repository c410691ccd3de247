"""Store outage: the store raises for a while mid-stream. chDB has no server to stop, so
the test injects a Store wrapper whose INSERTs raise while ``down`` is set (the only fake; broker and chDB are
real). Expect: retries with backoff, fetching paused (bounded memory), nothing committed past the stored rows,
readiness red while stalled, then recovery by itself with no loss and no duplicates; /metrics shows it all."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest

from auditlogkit.consumers.health import HealthServer
from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.consumer_helpers import BackgroundWorker, committed_offsets, count_events, publish
from tests.factories import random_events


class StoreDown(ConnectionError):
    pass


class _FlakyClient:
    def __init__(self, client: Any, down: threading.Event) -> None:
        self._c, self._down = client, down

    def __getattr__(self, name: str) -> Any:
        return getattr(self._c, name)

    def insert(self, *a: Any, **k: Any) -> Any:
        if self._down.is_set():
            raise StoreDown("injected: ClickHouse unreachable")
        return self._c.insert(*a, **k)

    def raw_insert(self, *a: Any, **k: Any) -> Any:  # the consumer's insert path (Native blocks)
        if self._down.is_set():
            raise StoreDown("injected: ClickHouse unreachable")
        return self._c.raw_insert(*a, **k)


class FlakyStore(Store):
    """The real store, except that INSERTs raise while ``down`` is set."""

    def __init__(self, url: str, database: str) -> None:
        super().__init__(url, database)
        self.down = threading.Event()

    def client(self) -> Any:
        return _FlakyClient(super().client(), self.down)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def _outage(settings: Settings, store: Store, outage_s: float) -> None:
    limit = 3000
    settings = settings.model_copy(update={
        "max_inflight_rows": limit, "batch_max_rows": 1000, "consumer_max_poll_records": 500,
        "consumer_retry_max_seconds": 1.0, "consumer_stall_seconds": 1.0,
    })
    flaky = FlakyStore(store.url, store.database)
    events = random_events(12_000, seed=5)
    values = [json.dumps(e).encode() for e in events]
    worker = ConsumerWorker(settings, flaky, retry_base_s=0.05)
    health = HealthServer("127.0.0.1", 0, lambda: [worker.status()]).start()
    base = f"http://127.0.0.1:{health.port}"
    try:
        async with BackgroundWorker(worker) as bw:
            await publish(settings.kafka_bootstrap, settings.topic, values[:3000])
            await bw.until(lambda s: s["stored"] == 3000, 60)
            await bw.until(lambda s: s["ready"], 10)
            assert _get(base + "/readyz")[0] == 200
            flaky.down.set()
            producer = asyncio.create_task(publish(settings.kafka_bootstrap, settings.topic, values[3000:]))
            await bw.until(lambda s: s["store_failing"], 30)
            before = await committed_offsets(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
            await bw.until(lambda s: s["paused"], 30)
            await bw.until(lambda s: not s["ready"], 30)  # no commit for > stall time while lag grows
            code, body = _get(base + "/readyz")
            assert code == 503 and json.loads(body)["workers"][0]["store_failing"]
            await producer
            await asyncio.sleep(max(0.0, outage_s - 2))
            during = await committed_offsets(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
            assert during == before, "committed while the store was down"
            assert count_events(store) == 3000
            st = worker.status()
            assert st["held_messages"] <= limit + settings.consumer_max_poll_records
            assert st["store_retries"] >= 2
            flaky.down.clear()
            await bw.until(lambda s: s["stored"] == len(values), 90)
            await bw.until(lambda s: s["lag_total"] == 0 and s["ready"] and not s["paused"], 30)
            assert _get(base + "/readyz")[0] == 200
            code, metrics = _get(base + "/metrics")
            assert code == 200
        assert worker.stats["max_held"] <= limit + settings.consumer_max_poll_records
        assert count_events(store) == len(values)
        raw = store.client().query("SELECT count(), uniqExact(event_id) FROM audit_events").result_rows[0]
        assert raw == (len(values), len(values))
        assert 'auditlog_consumer_retries_total{step="store"}' in metrics
        assert "auditlog_consumer_lag{" in metrics and "auditlog_consumer_flush_seconds_bucket" in metrics
        assert "auditlog_consumer_decode_seconds_count" in metrics and "auditlog_consumer_decode_helpers{" in metrics
        assert b"auditlog_consumer_events_stored_total" in generate_latest(REGISTRY)
    finally:
        health.stop()


@pytest.mark.timeout(120)
async def test_store_outage_short(settings: Settings, store: Store) -> None:
    await _outage(settings, store, outage_s=3)


@pytest.mark.soak
@pytest.mark.timeout(180)
async def test_store_outage_30s(settings: Settings, store: Store) -> None:
    await _outage(settings, store, outage_s=30)


class _FlakyDlq:
    """The real DLQ sender, except that sends raise while ``down`` is set (records sent before stay sent)."""

    def __init__(self, real: Any, down: threading.Event) -> None:
        self.real, self.down = real, down

    async def send(self, dead: Any) -> None:
        if self.down.is_set():
            if dead:  # half of the range lands, then the DLQ "fails": the retry must not send it twice
                await self.real.send(dead[: len(dead) // 2])
            raise ConnectionError("injected: DLQ topic unwritable")
        await self.real.send(dead)


@pytest.mark.timeout(120)
async def test_dlq_unwritable_blocks_insert_and_commit(settings: Settings, store: Store) -> None:
    from tests.consumer_helpers import read_topic
    from tests.factories import make_event

    settings = settings.model_copy(update={"consumer_retry_max_seconds": 0.5})
    down = threading.Event()
    down.set()
    worker = ConsumerWorker(settings, store, retry_base_s=0.05, wrap_dlq=lambda real: _FlakyDlq(real, down))
    valid = [json.dumps(e).encode() for e in random_events(200, seed=12)]
    invalid = [json.dumps(make_event(status=f"NOPE{i}")).encode() for i in range(40)]
    keys = [b"same-partition"] * (len(valid) + len(invalid))  # one partition: every range has both kinds
    async with BackgroundWorker(worker) as bw:
        await publish(settings.kafka_bootstrap, settings.topic, [*invalid[:20], *valid, *invalid[20:]], keys)
        await bw.until(lambda s: s["dlq_retries"] >= 3, 30)
        assert worker.status()["dlq_failing"]
        assert count_events(store) == 0  # rows wait for the dead letters of their range
        com = await committed_offsets(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
        assert all(o <= 0 for o in com.values())
        down.clear()
        await bw.until(lambda s: s["stored"] == 200 and s["dead_lettered"] == 40, 60)
    dlq = await read_topic(settings.kafka_bootstrap, settings.dlq_topic)
    assert sorted(r.value for r in dlq) == sorted(invalid)  # the half sent before the failure is not doubled
    assert count_events(store) == 200
