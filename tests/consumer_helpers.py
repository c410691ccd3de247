"""Helpers shared by the consumer's tests: read a whole topic, run a worker in the
background, count stored events. Real broker and real store only (nothing here fakes a component)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from auditlogkit.consumers.kafka.dlq import fetch_highwaters
from auditlogkit.consumers.kafka.topic_reader import read_topic
from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store

__all__ = [
    "BackgroundWorker", "committed_offsets", "consumer_env", "count_events", "highwaters", "log_events", "publish",
    "read_topic", "sql_in_subprocess",
]


async def publish(bootstrap: str, topic: str, values: list[bytes | None], keys: list[bytes | None] | None = None,
                  **kwargs: Any) -> None:
    """Publish raw values (acks=all) and wait for every ack."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=8 * 1024 * 1024, **kwargs)
    await p.start()
    try:
        futs = [await p.send(topic, value=v, key=(keys[i] if keys else None)) for i, v in enumerate(values)]
        await asyncio.gather(*futs)
    finally:
        await p.stop()


def count_events(store: Store, final: bool = True, where: str = "") -> int:
    q = f"SELECT count() FROM audit_events {'FINAL' if final else ''} {where}"
    return int(store.client().query(q).result_rows[0][0])


class BackgroundWorker:
    """``async with BackgroundWorker(worker) as w: await w.until(lambda s: ...)`` runs ``worker.run()``."""

    def __init__(self, worker: ConsumerWorker) -> None:
        self.worker = worker
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BackgroundWorker:
        self.task = asyncio.create_task(self.worker.run())
        return self

    async def until(self, pred: Callable[[dict[str, Any]], bool], timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.worker.status()
            if pred(st):
                return st
            if self.task is not None and self.task.done():
                self.task.result()
                raise RuntimeError("worker stopped")
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met; status={st}")
            await asyncio.sleep(0.05)

    async def stop(self, timeout_s: float = 60.0) -> None:
        self.worker.request_stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, timeout_s)

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None and not self.task.done():
            await self.stop()


async def highwaters(bootstrap: str, topic: str) -> dict[int, int]:
    """High watermark per partition (from fetch responses; ``end_offsets`` is unreliable on Tansu)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        hw = await fetch_highwaters(c, tps, time.monotonic() + 20)
        return {tp.partition: o for tp, o in hw.items()}
    finally:
        await c.stop()


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (-1 when none), without joining the group."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        out = {}
        for p in sorted(c.partitions_for_topic(topic) or ()):
            o = await c.committed(TopicPartition(topic, p))
            out[p] = -1 if o is None else int(o)
        return out
    finally:
        await c.stop()


def consumer_env(settings: Settings, data_dir: Path, **extra: Any) -> dict[str, str]:
    """Environment for an ``auditlog consume`` subprocess on its own chDB directory (one engine per process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITLOG_")}
    env.update({
        "AUDITLOG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "AUDITLOG_TOPIC": settings.topic,
        "AUDITLOG_DLQ_TOPIC": settings.dlq_topic,
        "AUDITLOG_CONSUMER_GROUP": settings.consumer_group,
        "AUDITLOG_DATA_DIR": str(data_dir),
        "AUDITLOG_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
        "AUDITLOG_BATCH_MAX_SECONDS": str(settings.batch_max_seconds),
        "AUDITLOG_CONSUMER_METRICS_PORT": "0",
    })
    env.update({f"AUDITLOG_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def sql_in_subprocess(data_dir: Path, queries: dict[str, str], database: str = "auditlog") -> dict[str, Any]:
    """Run read-only queries on the chDB directory of another (stopped) process: a fresh process, since one
    process holds one chDB engine path. Returns ``{name: rows}``."""
    code = (
        "import json,sys\n"
        "from auditlogkit.server.store import Store\n"
        "s = Store(sys.argv[1], sys.argv[2])\n"
        "qs = json.loads(sys.argv[3])\n"
        "print(json.dumps({k: [list(map(str, r)) for r in s.client().query(q).result_rows] for k, q in qs.items()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, f"chdb://{data_dir / 'chdb'}", database, json.dumps(queries)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def log_events(text: str, name: str) -> list[dict[str, Any]]:
    """The structlog JSON lines of ``text`` whose ``event`` is ``name``."""
    out = []
    for line in text.splitlines():
        if f'"{name}"' in line:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("event") == name:
                out.append(d)
    return out
