"""A consumer worker that starts while its broker cannot be reached waits for it (``up`` revives a killed broker
part within a second; the worker must not end the stack meanwhile), and stops cleanly if asked to while waiting."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiokafka import AIOKafkaProducer

from auditlogkit.consumers import worker as worker_module
from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.server.broker import EmbeddedBroker, ensure_topics, free_port
from auditlogkit.server.logs import configure, get_logger
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.consumer_helpers import log_events
from tests.factories import make_event


def _settings(tmp_path: Path, store: Store, port: int) -> Settings:
    return Settings(data_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{port}", topic="late.events",
                    dlq_topic="late.events.dlq", consumer_group=f"g-{uuid.uuid4().hex[:8]}", clickhouse_url=store.url,
                    clickhouse_database=store.database, session_timeout_ms=3000, batch_max_seconds=0.2,
                    jwt_secret="test-secret-0123456789abcdef0123456789")


async def test_a_worker_started_before_its_broker_waits_then_stores(tmp_path: Path, store: Store) -> None:
    port = free_port()
    s = _settings(tmp_path, store, port)
    worker = ConsumerWorker(s, store)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(1.5)
    assert not task.done() and not worker.status()["started"]  # waiting, not failed
    with EmbeddedBroker(port=port, log_file=tmp_path / "tansu.log") as broker:
        await ensure_topics(broker.bootstrap, [s.topic, s.dlq_topic], 1)
        ev = make_event()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(s.topic, json.dumps(ev).encode())
        finally:
            await producer.stop()
        for _ in range(300):
            n = store.client().query("SELECT count() FROM audit_events WHERE event_id = {e:UUID}",
                                     parameters={"e": ev["event_id"]}).result_rows[0][0]
            if n or task.done():
                break
            await asyncio.sleep(0.1)
        assert not task.done(), task.exception()
        assert n == 1 and worker.status()["started"]
        worker.request_stop()
        await asyncio.wait_for(task, 30)


async def test_a_worker_waiting_for_its_broker_stops_when_asked(tmp_path: Path, store: Store) -> None:
    worker = ConsumerWorker(_settings(tmp_path, store, free_port()), store)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(1.0)
    assert not task.done()
    worker.request_stop()
    await asyncio.wait_for(task, 15)  # returns, raises nothing
    assert not worker.status()["started"]




@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """This process's log as JSON lines in a buffer for one test, then the logging of before."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buf = io.StringIO()
    configure("info", file=buf, fmt="json")
    try:
        yield buf
    finally:
        structlog.reset_defaults()
        root.handlers, root.level = handlers, level


async def test_a_stop_asked_while_the_decode_helpers_start_is_logged_as_a_stop(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch, json_log: io.StringIO) -> None:
    """``up`` stopped right after READY: the DLQ producer is up and the decode helpers are starting, the group not
    yet joined. The worker returns without joining and says so (``consumer.stopped``, ``before="consuming"``)."""
    # a fresh logger for the worker: the module's own may be cached by an earlier test of this process with that
    # test's configuration (e.g. a command run in-process at level warning), and then drops info lines
    monkeypatch.setattr(worker_module, "log", get_logger("auditlogkit.consumers.worker"))
    port = free_port()
    s = _settings(tmp_path, store, port)
    worker = ConsumerWorker(s, store)
    real_shared_pool = worker_module.shared_pool

    def pool_whose_start_meets_a_stop(*args: Any, **kwargs: Any) -> Any:
        pool = real_shared_pool(*args, **kwargs)
        start = pool.start

        def start_then_stop() -> None:
            start()
            worker.request_stop()

        monkeypatch.setattr(pool, "start", start_then_stop)
        return pool

    monkeypatch.setattr(worker_module, "shared_pool", pool_whose_start_meets_a_stop)
    with EmbeddedBroker(port=port, log_file=tmp_path / "tansu.log") as broker:
        await ensure_topics(broker.bootstrap, [s.topic, s.dlq_topic], 1)
        await asyncio.wait_for(worker.run(), 30)
    stopped = log_events(json_log.getvalue(), "consumer.stopped")
    assert [e.get("before") for e in stopped] == ["consuming"], json_log.getvalue()[-3000:]
    assert not worker.status()["started"]
