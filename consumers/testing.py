"""Helpers shared by the consumer's tests and ``bench/ingest.py``: read a whole topic, run a worker in the
background, count stored events. Real broker and real store only (nothing here fakes a component)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from auditlog.store import Store
from consumers.worker import ConsumerWorker


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every record of ``topic`` (all partitions, from the start up to each high watermark)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                         max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        out: list[Any] = []
        done: set[TopicPartition] = set()
        pos = dict.fromkeys(tps, 0)
        deadline = time.monotonic() + timeout_s
        while len(done) < len(tps):
            batch = await c.getmany(timeout_ms=200)
            for tp, recs in batch.items():
                out.extend(recs)
                if recs:
                    pos[tp] = recs[-1].offset + 1
            for tp in tps:
                hw = c.highwater(tp)
                if hw is not None and pos[tp] >= hw:
                    done.add(tp)
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: {len(done)}/{len(tps)} partitions complete")
        return out
    finally:
        await c.stop()


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
