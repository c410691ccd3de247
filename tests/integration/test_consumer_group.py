"""Several workers in one group with members leaving and joining during the load:
revoked partitions are flushed and committed before they move; no loss, no duplicates."""

from __future__ import annotations

import asyncio
import json

import pytest

from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.consumer_helpers import BackgroundWorker, count_events, publish, read_topic
from tests.factories import make_event, random_events

pytestmark = pytest.mark.timeout(150)


async def _publish_slowly(settings: Settings, values: list[bytes], chunks: int) -> None:
    step = len(values) // chunks + 1
    for i in range(0, len(values), step):
        await publish(settings.kafka_bootstrap, settings.topic, values[i:i + step])
        await asyncio.sleep(0.4)


@pytest.mark.parametrize("decode_processes", [0, 2], ids=["decode-in-process", "decode-helpers"])
async def test_workers_leave_and_join_during_load(settings: Settings, store: Store, decode_processes: int) -> None:
    """With helpers, decodes in flight straddle the rebalances (dropped and fetched again by the owner)."""
    settings = settings.model_copy(update={"batch_max_rows": 500, "consumer_max_poll_records": 500,
                                           "consumer_decode_processes": decode_processes})
    events = random_events(24_000, seed=21)
    values = [json.dumps(e).encode() for e in events]
    invalid = [json.dumps(make_event(actor={"ip": f"bad-ip-{i}"})).encode() for i in range(60)]
    for i, bad in enumerate(invalid):
        values.insert(i * 397, bad)
    producer = asyncio.create_task(_publish_slowly(settings, values, 24))

    w1, w2, w3 = (ConsumerWorker(settings, store, name=f"w{i}") for i in (1, 2, 3))
    async with BackgroundWorker(w1) as b1, BackgroundWorker(w2) as b2:
        await b1.until(lambda s: s["stored"] > 0, 60)
        await b2.until(lambda s: len(s["assigned"]) > 0, 60)  # two members share the partitions
        async with BackgroundWorker(w3) as b3:  # a third joins
            await b3.until(lambda s: s["stored"] > 0, 60)
            await b1.stop()  # one leaves during the load
            await b3.until(lambda s: len(s["assigned"]) + len(w2.status()["assigned"]) == 6, 60)
            w4 = ConsumerWorker(settings, store, name="w4")
            async with BackgroundWorker(w4) as b4:  # and another joins
                await b4.until(lambda s: len(s["assigned"]) > 0, 60)
                await producer
                total = lambda: sum(w.stats["stored"] for w in (w1, w2, w3, w4))  # noqa: E731
                await b4.until(lambda s: total() >= len(events), 90)
                await asyncio.sleep(1.0)
    workers = (w1, w2, w3, w4)
    assert sum(w.stats["rebalances"] for w in workers) >= 3
    # every row inserted once: the workers' insert counts add up exactly (a redelivered range would add more)
    assert sum(w.stats["stored"] for w in workers) == len(events)
    assert sum(w.stats["dead_lettered"] for w in workers) == len(invalid)
    assert count_events(store) == len(events)
    assert store.client().query("SELECT uniqExact(event_id) FROM audit_events").result_rows[0][0] == len(events)
    dlq = await read_topic(settings.kafka_bootstrap, settings.dlq_topic)
    assert sorted(r.value for r in dlq) == sorted(invalid)
