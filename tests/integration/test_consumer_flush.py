"""When the consumer flushes: on catching up (not only by batch age or size), one insert for several partitions,
and with the lean insert settings the embedded store knows. Real broker, real chDB."""

from __future__ import annotations

import json
import time

import pytest

from auditlogkit.consumers.store.inserter import INSERT_SETTINGS, Inserter
from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.consumer_helpers import BackgroundWorker, count_events, publish
from tests.factories import random_events

pytestmark = pytest.mark.timeout(120)


async def test_a_consumer_that_caught_up_flushes_long_before_the_batch_age(settings: Settings, store: Store) -> None:
    s = settings.model_copy(update={"batch_max_seconds": 60.0, "batch_min_seconds": 0.1, "batch_max_rows": 50_000})
    async with BackgroundWorker(ConsumerWorker(s, store)) as bw:
        await bw.until(lambda st: len(st["assigned"]) == 6, 60)
        values = [json.dumps(e).encode() for e in random_events(40, seed=3)]
        t0 = time.monotonic()
        await publish(s.kafka_bootstrap, s.topic, values, [b"org-%d" % i for i in range(len(values))])
        st = await bw.until(lambda st: st["stored"] == len(values), 45)
        waited = time.monotonic() - t0
    assert waited < 30, f"stored only after {waited:.1f} s: flushed by age, not on catching up"
    assert st["flushes"] >= 1 and count_events(store) == len(values)


async def test_a_backlog_of_several_partitions_goes_in_few_large_inserts(settings: Settings, store: Store) -> None:
    values = [json.dumps(e).encode() for e in random_events(6_000, seed=4)]
    await publish(settings.kafka_bootstrap, settings.topic, values, [b"org-%d" % (i % 60) for i in range(len(values))])
    s = settings.model_copy(update={"batch_max_seconds": 5.0, "batch_max_rows": 50_000})
    async with BackgroundWorker(ConsumerWorker(s, store)) as bw:
        st = await bw.until(lambda st: st["stored"] == len(values), 60)
    parts = store.client().query(
        "SELECT uniqExact(kafka_partition) FROM audit_events").result_rows[0][0]
    assert parts == 6
    assert st["flushes"] < 6, st  # per-partition flushing would need at least one insert per partition
    assert count_events(store) == len(values)


def test_insert_settings_are_used_where_the_store_knows_them(store: Store) -> None:
    ins = Inserter(store)
    try:
        used = ins._pool.submit(ins._insert_settings).result()
        assert used == INSERT_SETTINGS  # chDB 26.x knows every one
        assert used["distributed_foreground_insert"] == 1  # on a cluster: stored on the shards before the commit
    finally:
        ins.close()
