"""Committing step, last in the chain: commits the offsets of finished flushes, one commit at a time.

A commit that fails because the group moved on is dropped (the new owner's watermarks cover those ranges); any
other failure keeps the offsets for the next round. Only partitions still assigned are committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from auditlogkit.consumers import metrics as m
from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.consumers.steps.committing")


class Committing:
    def __init__(self, consumer: AIOKafkaConsumer, on_committed: Callable[[dict[TopicPartition, int]], None],
                 worker: str) -> None:
        self.consumer = consumer
        self.on_committed = on_committed
        self.worker = worker
        self._pending: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None

    def submit(self, item: dict[TopicPartition, int]) -> None:
        for tp, o in item.items():
            self._pending[tp] = max(o, self._pending.get(tp, o))

    def poll(self) -> None:
        if self._task is not None and self._task.done():
            self._task = None
        if self._pending and self._task is None:
            offsets, self._pending = self._pending, {}
            self._task = asyncio.create_task(self._commit(offsets), name=f"commit-{self.worker}")

    async def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if self._task is None:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait([self._task], timeout=remaining)

    def close(self) -> None:
        """Finished flushes still commit on :meth:`join`: nothing to drop here."""

    def held(self) -> int:
        return 0

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assigned = self.consumer.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            m.COMMITS.labels("rebalanced").inc()
            log.warning("commit.failed", worker=self.worker, error=str(exc)[:200], retry=False)
            return
        except Exception as exc:  # transient: keep the newest offset and retry next round
            m.COMMITS.labels("error").inc()
            log.warning("commit.failed", worker=self.worker, error=repr(exc)[:200], retry=True)
            self.submit(offsets)
            await asyncio.sleep(0.1)
            return
        m.COMMITS.labels("ok").inc()
        self.on_committed(offsets)
