"""Flushing step: one :class:`~auditlogkit.consumers.batch.FlushJob` at a time: dead letters, then the insert, then commit.

(1) each batch's dead letters are sent and every ack awaited (a retry sends only what the DLQ lacks), (2) the
first-write guard drops rows that repeat a stored event and keeps aside those that would rewrite one
(:mod:`auditlogkit.consumers.store.first_write_guard`), (3) the other rows of the job go to ClickHouse in ONE insert carrying the
job's deduplication token, (4) only then are the job's offsets handed to the committing step. (1) to (3) are retried until they succeed
(:mod:`auditlogkit.consumers.retry`);
meanwhile nothing is committed and the batches upstream keep growing until backpressure pauses fetching.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from aiokafka import TopicPartition

from auditlogkit.consumers import metrics as m
from auditlogkit.consumers.batch import FlushJob, PartitionBatch
from auditlogkit.consumers.decode.decoder import DeadLetter
from auditlogkit.consumers.retry import Retry
from auditlogkit.consumers.steps import MessageRejected
from auditlogkit.consumers.steps.committing import Committing
from auditlogkit.consumers.store.first_write_guard import FirstWriteGuard
from auditlogkit.consumers.store.inserter import Inserter
from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.consumers.steps.flushing")


class Flushing:
    def __init__(self, next_step: Committing, inserter: Inserter, send_dead: Callable[[Sequence[DeadLetter]], Awaitable[None]],
                 dlq_watermark: Callable[[TopicPartition], Awaitable[int]], retry: Retry, counts: Counter[str],
                 worker: str, guard: FirstWriteGuard | None = None,
                 on_stored: Callable[[int], None] | None = None) -> None:
        self.next = next_step
        self.inserter = inserter
        self.guard = guard
        self.send_dead = send_dead
        self.dlq_watermark = dlq_watermark
        self.retry = retry
        self.counts = counts  # this step's own: flushes, stored, dead_lettered, conflicts, retries_dropped
        self.worker = worker
        self.on_stored = on_stored
        self._job: FlushJob | None = None
        self._task: asyncio.Task[None] | None = None

    def submit(self, item: FlushJob) -> None:
        if self._task is not None:  # one flush in flight: the batches wait (and grow) upstream
            raise MessageRejected("a flush is already in flight")
        self._job = item
        self._task = asyncio.create_task(self._flush(item), name=f"flush-{self.worker}")

    def poll(self) -> None:
        t = self._task
        if t is not None and t.done():
            job, self._job, self._task = self._job, None, None
            t.result()  # a failure here is a bug (store and broker errors are retried): fatal
            assert job is not None
            self.next.submit(job.commit_offsets())
        self.next.poll()

    async def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if self._task is not None:
            await asyncio.wait([self._task], timeout=timeout)
            if not self._task.done():
                return False
            self.poll()
        return await self.next.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._task = self._job = None
        self.next.close()

    def held(self) -> int:
        return self._job.messages if self._job is not None else 0

    async def _flush(self, job: FlushJob) -> None:
        t0 = time.perf_counter()
        for b in job.batches:
            if b.dead:
                await self.retry.run("dlq", partial(self._send, b))
        rows = job.rows
        conflicts = retries = 0
        if rows:
            blocks, token = job.blocks, job.dedup_token()
            guard = self.guard
            if guard is not None:  # first write wins: retries dropped, conflicts kept aside (module contract)
                checked = await self.retry.run("store", lambda _a: guard.check(job))
                if checked.conflicts:
                    await self.retry.run("store", lambda _a: self.inserter.insert_conflicts(checked.conflicts))
                blocks, rows = checked.blocks, checked.rows
                conflicts, retries = len(checked.conflicts), checked.retries
            if rows:
                await self.retry.run("store", lambda _a: self.inserter.insert(blocks, rows, token))
                if self.on_stored is not None:
                    self.on_stored(rows)
            if guard is not None:
                guard.stored(checked.keys, job)
        secs = time.perf_counter() - t0
        dead = sum(len(b.dead) for b in job.batches)
        self.counts["flushes"] += 1
        self.counts["stored"] += rows
        self.counts["dead_lettered"] += dead
        if conflicts or retries:
            self.counts["conflicts"] += conflicts
            self.counts["retries_dropped"] += retries
            m.CONFLICTS.labels(job.batches[0].tp.topic).inc(conflicts)
            m.RETRIES_DROPPED.labels(job.batches[0].tp.topic).inc(retries)
            if conflicts:
                log.warning("event.conflicts_kept_aside", worker=self.worker, conflicts=conflicts)
        for b in job.batches:
            m.STORED.labels(b.tp.topic).inc(b.rows)
            m.BATCH_ROWS.observe(b.messages)
            for d in b.dead:
                m.DEAD_LETTERED.labels(b.tp.topic, d.field).inc()
                log.info("message.dead_lettered", partition=d.partition, offset=d.offset, field=d.field,
                         reason=d.reason[:300])
        log.info("batch.flushed", worker=self.worker, partitions={b.tp.partition: [b.first, b.last] for b in job.batches},
                 rows=rows, dead_lettered=dead, skipped=sum(b.skipped for b in job.batches), ms=round(secs * 1000, 1))

    async def _send(self, b: PartitionBatch, attempt: int) -> None:
        dead = b.dead
        if attempt > 0:  # some of the range may have landed before the failure: send only what the DLQ lacks
            wm = await self.dlq_watermark(b.tp)
            dead = [d for d in dead if d.offset > wm]
        await self.send_dead(dead)
