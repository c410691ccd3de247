"""Helpers shared by the consumer's tests and ``bench/ingest.py``: read a whole topic, run a worker in the
background, count stored events. Real broker and real store only (nothing here fakes a component)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from auditlog.store import Store
from consumers.topic_reader import read_topic
from consumers.worker import ConsumerWorker


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


__all__ = ["BackgroundWorker", "count_events", "publish", "read_topic"]
