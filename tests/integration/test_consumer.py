"""The consumer end to end on the real broker and the real chDB engine: valid events stored, every class of invalid
message dead-lettered, a producer that is not ours, and a new log under old watermarks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from auditlogkit.consumers.kafka.dlq import H_FIELD, H_OFFSET, H_PARTITION, H_REASON, H_TIME, H_TOPIC, header
from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.consumer_helpers import BackgroundWorker, count_events, publish, read_topic
from tests.factories import make_event, random_events

pytestmark = pytest.mark.timeout(120)


def _enc(ev: dict) -> bytes:
    return json.dumps(ev).encode()


# (label, raw bytes, expected dlq.error.field, substring of dlq.error.reason)
def invalid_cases() -> list[tuple[str, bytes, str, str]]:
    future = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    return [
        ("unknown action", _enc(make_event(action="vm.explode")), "action", "vm.explode"),
        ("bad ip", _enc(make_event(actor={"ip": "999.1.2.3"})), "actor.ip", "IPv4 or IPv6"),
        ("not json", b'{"event_id": "x", oops', "message", "not valid JSON"),
        ("2 MiB", _enc(make_event(description="x" * (2 * 1024 * 1024))), "message", "larger than"),
        ("non-utf8", b'{"org_id": "\xff\xfe"}', "message", "not UTF-8"),
        ("wrong type", _enc(make_event(schema_version="1")), "schema_version", ""),
        ("future ts", _enc(make_event(occurred_at=future)), "occurred_at", "future"),
        ("unknown field", _enc({**make_event(), "colour": "red"}), "colour", "unknown field"),
        ("json array", b"[1, 2, 3]", "", ""),
    ]


async def test_valid_stored_and_every_invalid_class_dead_lettered(settings: Settings, store: Store) -> None:
    valid = random_events(300, seed=7)
    cases = invalid_cases()
    values = [_enc(e) for e in valid[:150]] + [c[1] for c in cases] + [_enc(e) for e in valid[150:]]
    keys = [b"k-%d" % i for i in range(len(values))]
    await publish(settings.kafka_bootstrap, settings.topic, values, keys)

    worker = ConsumerWorker(settings, store)
    async with BackgroundWorker(worker) as bw:
        await bw.until(lambda s: s["stored"] + s["dead_lettered"] >= len(values), 60)
        await bw.until(lambda s: s["lag_total"] == 0 and not s["held_messages"], 30)
    assert count_events(store) == 300
    ids = {str(r[0]) for r in store.client().query("SELECT event_id FROM audit_events FINAL").result_rows}
    assert ids == {e["event_id"] for e in valid}

    dlq = await read_topic(settings.kafka_bootstrap, settings.dlq_topic)
    assert len(dlq) == len(cases)
    by_value = {r.value: r for r in dlq}
    for label, raw, field, reason in cases:
        rec = by_value[raw]  # original bytes untouched
        assert header(rec.headers, H_TOPIC) == settings.topic, label
        assert header(rec.headers, H_REASON), label
        if field:
            assert header(rec.headers, H_FIELD) == field, (label, rec.headers)
        if reason:
            assert reason in (header(rec.headers, H_REASON) or ""), (label, header(rec.headers, H_REASON))
        assert rec.key == keys[values.index(raw)], label
        p, o = int(header(rec.headers, H_PARTITION) or -1), int(header(rec.headers, H_OFFSET) or -1)
        assert rec.partition == p % 6 and o >= 0, label
        assert header(rec.headers, H_TIME), label
    assert worker.stats["dead_lettered"] == len(cases)
    assert worker.stats["skipped_stored"] == worker.stats["skipped_dlq"] == 0


async def test_plain_kafka_python_client(settings: Settings, store: Store) -> None:
    """A producer that is not ours (kafka-python, no key, its own batching) is consumed the same way."""
    from kafka import KafkaProducer

    prod = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", api_version=(2, 5, 0))
    evs = random_events(20, seed=3)
    for e in evs:
        prod.send(settings.topic, json.dumps(e).encode())
    prod.send(settings.topic, b"not json at all")
    prod.flush(10)
    prod.close()
    told: list[int] = []  # on_stored: what up's log streams are woken by
    async with BackgroundWorker(ConsumerWorker(settings, store, on_stored=told.append)) as bw:
        await bw.until(lambda s: s["stored"] == 20 and s["dead_lettered"] == 1, 60)
    assert count_events(store) == 20
    assert sum(told) == 20 and all(n > 0 for n in told)


async def test_new_log_with_old_watermarks_loses_nothing(settings: Settings, store: Store) -> None:
    """``auditlog up`` restarts a memory broker (and topics can be re-created): offsets start again at 0 while
    the store keeps the old watermarks. The worker must notice that they belong to another log."""
    from aiokafka.admin import AIOKafkaAdminClient

    from auditlogkit.server.broker import ensure_topics

    first = random_events(120, seed=31)
    await publish(settings.kafka_bootstrap, settings.topic, [_enc(e) for e in first])
    async with BackgroundWorker(ConsumerWorker(settings, store)) as bw:
        await bw.until(lambda s: s["stored"] == 120, 60)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([settings.topic, settings.dlq_topic])
    finally:
        await admin.close()
    await ensure_topics(settings.kafka_bootstrap, [settings.topic, settings.dlq_topic], 6)
    second = random_events(60, seed=32)
    await publish(settings.kafka_bootstrap, settings.topic, [_enc(e) for e in second])
    fresh = settings.model_copy(update={"consumer_group": settings.consumer_group + "-new"})
    worker = ConsumerWorker(fresh, store)
    async with BackgroundWorker(worker) as bw:
        await bw.until(lambda s: s["stored"] + s["skipped_stored"] >= 60 and s["lag_total"] == 0, 60)
    assert worker.stats["skipped_stored"] == 0
    assert count_events(store) == 180
