"""Batching step: decoded runs -> per-partition batches -> one :class:`~auditlogkit.consumers.batch.FlushJob` at a time.

The next step is known only through the :class:`~auditlogkit.consumers.steps.Step` protocol: a job it rejects
(:class:`~auditlogkit.consumers.steps.MessageRejected`; the flushing step keeps one insert in flight per worker) is not taken,
its batches stay open and keep growing, and it is offered again on a later poll. A flush takes the open batches
of the partitions, oldest first, up to ``batch_max_rows`` messages, when they hold a quarter of that (a backlog:
while one insert runs the next grows, so inserts stay large and the inserter never waits), when one is
``batch_max_seconds`` old, or when every partition with an open batch has caught up with the broker and nothing
is being decoded, at most once per ``batch_min_seconds`` (fresh data is visible quickly at low load, and a
sustained load still makes few large inserts. The DLQ-rate guard sees every decoded message here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from aiokafka import TopicPartition

from auditlogkit.consumers import metrics as m
from auditlogkit.consumers.batch import FlushJob, PartitionBatch
from auditlogkit.consumers.decode.decoder import dead_letter
from auditlogkit.consumers.kafka.dlq import DlqLimit
from auditlogkit.consumers.partition import PartitionState
from auditlogkit.consumers.steps import Decoded, MessageRejected, Step
from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.consumers.steps.batching")


class Batching:
    def __init__(self, states: dict[TopicPartition, PartitionState], next_step: Step[FlushJob], limit: DlqLimit,
                 counts: Counter[str], *, max_rows: int, max_seconds: float, min_seconds: float,
                 upstream_busy: Callable[[], bool] = lambda: False) -> None:
        self.states = states
        self.next = next_step
        self.limit = limit
        self.counts = counts  # this step's own: consumed, skipped_stored, skipped_dlq
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.min_seconds = min_seconds
        self.upstream_busy = upstream_busy
        self._last_flush = 0.0

    def submit(self, item: Decoded) -> None:
        recs = item.records
        b = item.state.batch(recs[0].offset)
        dead_at: list[int] = []
        base = stored = dead = 0
        for chunk, res in zip(item.chunks, item.results, strict=True):
            last = chunk.offsets[-1]
            for i, field, reason in res.invalid:
                b.add_dead(chunk.offsets[i], dead_letter(recs[base + i], field, reason))
                dead_at.append(base + i)
            b.add_decoded(chunk, res)
            if res.already_stored or res.already_dead:
                b.add_skipped(last, res.already_stored + res.already_dead)
                stored += res.already_stored
                dead += res.already_dead
            b.add_fingerprint(res.fingerprint)
            base += len(chunk.offsets)
        topic = item.state.tp.topic
        self.counts["consumed"] += len(recs)
        m.CONSUMED.labels(topic).inc(len(recs))
        if stored or dead:
            self.counts["skipped_stored"] += stored
            self.counts["skipped_dlq"] += dead
            m.SKIPPED.labels(topic, "stored").inc(stored)
            m.SKIPPED.labels(topic, "dead_lettered").inc(dead)
            log.info("messages.skipped_redelivered", partition=item.state.tp.partition, first=recs[0].offset,
                     stored=stored, dead_lettered=dead)
        self.limit.observe_many(len(recs), dead_at)

    def _due(self, now: float) -> list[PartitionState]:
        open_ = [st for st in self.states.values() if st.open is not None]
        if not open_:
            return []
        held = sum(st.open.messages for st in open_ if st.open is not None)
        if held >= self.max_rows // 4 or any(st.open is not None and st.open.age(now) >= self.max_seconds
                                             for st in open_):
            return open_
        if now - self._last_flush >= self.min_seconds and not self.upstream_busy() \
                and all(st.caught_up for st in open_):
            return open_
        return []

    def _start(self, states: list[PartitionState], now: float) -> bool:
        """Flush the open batches, oldest first, up to ``max_rows`` messages (at least one batch); False when the
        next step rejected the job (the batches stay open)."""
        batches = sorted((st.open for st in states if st.open is not None), key=lambda b: b.created)
        take: list[PartitionBatch] = []
        n = 0
        for b in batches:
            if take and n + b.messages > self.max_rows:
                break
            take.append(b)
            n += b.messages
        try:
            self.next.submit(FlushJob(tuple(take)))
        except MessageRejected:
            return False
        for b in take:
            self.states[b.tp].take()
        self._last_flush = now
        return True

    def poll(self) -> None:
        self.next.poll()
        now = time.monotonic()
        due = self._due(now)
        if due:
            self._start(due, now)

    async def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.next.poll()
            open_ = [st for st in self.states.values() if st.open is not None]
            if not open_:
                break
            self._start(open_, time.monotonic())  # rejected or not, the next step's join makes room
            if not await self.next.join(max(0.0, deadline - time.monotonic())):
                return False
        return await self.next.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for st in self.states.values():
            st.take()
        self.next.close()

    def held(self) -> int:
        return sum(st.open.messages for st in self.states.values() if st.open is not None) + self.next.held()
