"""Kill the consumer between INSERT and the offset commit (the pipeline's exactly-once effect): after a restart
nothing is lost and nothing is stored or dead-lettered twice. Real processes, real SIGKILL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from auditlogkit.server.settings import Settings
from tests.consumer_helpers import (
    committed_offsets,
    consumer_env,
    highwaters,
    log_events,
    publish,
    read_topic,
    sql_in_subprocess,
)
from tests.factories import make_event, random_events

pytestmark = pytest.mark.timeout(180)

# A consumer whose store SIGKILLs the process right after its Nth successful INSERT (before the commit).
CRASHING_CONSUMER = """
import asyncio, os, signal, sys
from auditlogkit.server import logs
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from auditlogkit.server.db.migrations import migrate
from auditlogkit.consumers.worker import ConsumerWorker

KILL_AFTER = int(sys.argv[1])
inserts = 0

class _KillAfterInsert:
    def __init__(self, client):
        self._c = client
    def __getattr__(self, name):
        return getattr(self._c, name)
    def raw_insert(self, *a, **k):  # the consumer's insert path
        global inserts
        out = self._c.raw_insert(*a, **k)
        inserts += 1
        if inserts >= KILL_AFTER:
            print("KILLING after insert", inserts, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return out

class KillingStore(Store):
    def client(self):
        return _KillAfterInsert(super().client())

s = Settings()
logs.configure("info")
store = KillingStore(s.store_url, s.clickhouse_database)
migrate(store)
asyncio.run(ConsumerWorker(s, store).run())
"""


async def _wait_consumed(settings: Settings, timeout: float = 60) -> None:
    hw = await highwaters(settings.kafka_bootstrap, settings.topic)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        com = await committed_offsets(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
        if all(max(com.get(p, -1), 0) >= o for p, o in hw.items()):
            return
        if loop.time() > deadline:
            raise TimeoutError(f"committed {com} < highwater {hw}")
        await asyncio.sleep(0.3)


async def test_kill_between_insert_and_commit(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"batch_max_rows": 200, "batch_max_seconds": 0.5})
    valid = random_events(1200, seed=11)
    invalid = [json.dumps(make_event(action=f"vm.bogus{i}")).encode() for i in range(30)]
    values = [json.dumps(e).encode() for e in valid]
    for i, bad in enumerate(invalid):  # spread invalid messages so that stored ranges contain some
        values.insert(i * 40 + 7, bad)
    keys = [b"org-%d" % (i % 6) for i in range(len(values))]
    await publish(settings.kafka_bootstrap, settings.topic, values, keys)

    env = consumer_env(settings, tmp_path / "c", batch_max_rows=200)
    crash = tmp_path / "crash.py"
    crash.write_text(CRASHING_CONSUMER)
    first = subprocess.run([sys.executable, str(crash), "4"], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == -9, first.stderr[-3000:]
    flushed_before = sum(e["rows"] for e in log_events(first.stderr, "batch.flushed"))

    proc = subprocess.Popen([sys.executable, "-m", "auditlogkit.server.app.cli", "consume"], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        await _wait_consumed(settings)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    stopped = log_events(err, "consumer.stopped")[-1]
    # the range inserted just before the kill was redelivered and recognised as stored
    assert stopped["skipped_stored"] > 0, err[-3000:]
    flushed_after = sum(e["rows"] for e in log_events(err, "batch.flushed"))
    # rows of the range inserted right before the kill: never flushed again, they were skipped instead
    killed_rows = len(valid) - flushed_before - flushed_after
    assert killed_rows > 0
    assert stopped["skipped_stored"] >= killed_rows

    res = sql_in_subprocess(tmp_path / "c", {
        "final": "SELECT count() FROM audit_events FINAL",
        "raw": "SELECT count(), uniqExact(event_id) FROM audit_events",
    })
    assert int(res["final"][0][0]) == len(valid)
    assert res["raw"][0] == [str(len(valid)), str(len(valid))]  # not one row stored twice

    dlq = await read_topic(settings.kafka_bootstrap, settings.dlq_topic)
    assert sorted(r.value for r in dlq) == sorted(invalid)  # each exactly once


async def test_dlq_watermark_at_a_null_message_is_kept(settings: Settings) -> None:
    """A null-value message is invalid (dead-lettered): a DLQ watermark at it belongs to the current log, unlike
    one past the log's end (else a restart would dead-letter that partition's invalid messages twice)."""
    from aiokafka import AIOKafkaProducer

    from auditlogkit.consumers.kafka.watermark_check import verify_watermarks
    from auditlogkit.schemas.catalog import get_catalog

    p = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await p.start()
    try:
        await p.send_and_wait(settings.topic, json.dumps(make_event()).encode(), partition=0)
        await p.send_and_wait(settings.topic, None, key=b"k", partition=0)
    finally:
        await p.stop()

    async def nothing_stored(*_args: object) -> bool:
        return False

    _, dlq = await verify_watermarks(settings.kafka_bootstrap, settings.topic, {}, {0: 1, 1: 0},
                                     nothing_stored, get_catalog())
    assert dlq == {0: 1, 1: -1}
