"""The consumer-group worker: builds the processor and its chain of steps, and reports status.

Contract: ``ConsumerWorker(settings, store).run()`` joins the group and consumes until :meth:`request_stop`
(then flushes, commits, leaves the group and returns; bounded by ``consumer_shutdown_timeout_s``). Every message
is stored once or dead-lettered once: offsets are committed only after the DLQ acks and the insert
(:mod:`auditlogkit.consumers.steps`), and redeliveries after a crash or rebalance are recognised by the watermarks
(:mod:`auditlogkit.consumers.fate`), the insert deduplication token, and ReplacingMergeTree + FINAL reads. Raises
:class:`~auditlogkit.consumers.kafka.dlq.DlqLimitExceeded` when the DLQ-rate guard trips (nothing of that window committed).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from itertools import count
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from auditlogkit.consumers import metrics as m
from auditlogkit.consumers.decode.pool import DecodePool, shared_pool
from auditlogkit.consumers.fate import Watermarks
from auditlogkit.consumers.kafka.dlq import (
    MAX_DLQ_REQUEST_BYTES,
    DlqLimit,
    DlqLimitExceeded,
    DlqSender,
    make_dlq_producer,
    read_dlq_watermarks,
)
from auditlogkit.consumers.kafka.watermark_check import verify_watermarks
from auditlogkit.consumers.partition import PartitionState
from auditlogkit.consumers.processor import StreamProcessor
from auditlogkit.consumers.retry import Retry, Stopping
from auditlogkit.consumers.steps import Fetched, Step
from auditlogkit.consumers.steps.batching import Batching
from auditlogkit.consumers.steps.committing import Committing
from auditlogkit.consumers.steps.decoding import Decoding
from auditlogkit.consumers.steps.flushing import Flushing
from auditlogkit.consumers.store.first_write_guard import FirstWriteGuard
from auditlogkit.consumers.store.inserter import Inserter
from auditlogkit.kafka import KafkaConnection, kafka_options
from auditlogkit.schemas.catalog import Catalog, get_catalog
from auditlogkit.server.logs import get_logger
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store

log = get_logger("auditlogkit.consumers.worker")
_ids = count(1)
_STATS = ("consumed", "stored", "dead_lettered", "conflicts", "retries_dropped", "skipped_stored", "skipped_dlq", "flushes", "commits",
          "store_retries", "dlq_retries", "max_held", "rebalances")


class ConsumerWorker:
    """One member of the consumer group. ``await run()`` until :meth:`request_stop`."""

    def __init__(self, settings: Settings, store: Store, *, catalog: Catalog | None = None, name: str | None = None,
                 retry_base_s: float = 0.1, wrap_dlq: Callable[[DlqSender], Any] | None = None,
                 on_stored: Callable[[int], None] | None = None) -> None:
        """``wrap_dlq`` (tests only) may wrap the DLQ sender, e.g. to make the DLQ unwritable for a while;
        ``on_stored(rows)`` is called on the worker's loop after each insert (before the commit)."""
        self.on_stored = on_stored
        self.settings = settings
        self.store = store
        self.name = name or f"{settings.consumer_group}-{os.getpid()}-{next(_ids)}"
        self.catalog = catalog or get_catalog()
        self.dedup = settings.consumer_dedup
        self._kafka = KafkaConnection.from_settings(settings)
        self._wrap_dlq = wrap_dlq
        # counters per step, kept across assignments (each chain's steps count into their own)
        self.counts: dict[str, Counter[str]] = {k: Counter() for k in ("batching", "flushing", "retry", "worker")}
        self.retry = Retry(self.name, retry_base_s, settings.consumer_retry_max_seconds, self._stop_requested,
                           self.counts["retry"])
        self.limit = DlqLimit(settings.dlq_limit_ratio, settings.dlq_limit_window)
        self._stop = False
        self._started = False
        self._closing = False
        self._fatal: BaseException | None = None
        self._last_commit = time.monotonic()
        self._lag_at_commit = 0
        self._processor: StreamProcessor | None = None
        self._pool: DecodePool | None = None
        self._inserter: Inserter | None = None
        self._guard: FirstWriteGuard | None = None
        self._keys = settings.server_keys()
        self._dlq: Any = None
        self._dlq_partitions = 1

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop fetching, flush, commit, leave the group and return (thread-safe)."""
        self._stop = True
        if self._processor is not None:
            self._processor.request_stop()

    def _stop_requested(self) -> bool:
        return self._stop

    def status(self) -> dict[str, Any]:
        """Readiness and progress (safe to call from another thread)."""
        p = self._processor
        age = time.monotonic() - self._last_commit
        lag = p.observe_lag() if p is not None else {}
        total_lag = sum(lag.values())
        stalled = total_lag > 0 and age > self.settings.consumer_stall_seconds and total_lag >= self._lag_at_commit
        if p is not None:
            self._sync_stats(p)
        return {
            "worker": self.name,
            "ready": self._started and not self._closing and self._fatal is None and not stalled,
            "started": self._started,
            "stalled": stalled,
            "error": str(self._fatal) if self._fatal else None,
            "assigned": sorted(tp.partition for tp in list(p.partitions)) if p is not None else [],
            "last_commit_age_s": round(age, 3),
            "lag": lag,
            "lag_total": total_lag,
            "paused": p.paused if p is not None else False,
            "store_failing": self.retry.failing["store"],
            "dlq_failing": self.retry.failing["dlq"],
            "held_messages": p.held if p is not None else 0,
            "decode_helpers": self._pool.processes if self._pool else None,
            **self.stats,
        }

    async def run(self) -> None:
        s = self.settings
        self._inserter = Inserter(self.store, dedup=self.dedup, name=f"inserter-{self.name}", nice=s.consumer_nice)
        producer = None
        try:
            producer = await self._kafka_start(lambda: make_dlq_producer(self._kafka), "dlq_producer")
            if producer is None:  # stopped while the broker was unreachable: nothing was consumed
                return
            parts = await producer.partitions_for(s.dlq_topic)
            if not parts:
                raise RuntimeError(f"DLQ topic {s.dlq_topic!r} has no partitions (create it first)")
            self._dlq_partitions = len(parts)
            self._dlq = DlqSender(producer, s.dlq_topic, self._dlq_partitions, s.consumer_group)
            if self._wrap_dlq is not None:
                self._dlq = self._wrap_dlq(self._dlq)
            try:
                types = await self.retry.run("store", lambda _a: self._inserter.column_types(), stoppable=True)  # type: ignore[union-attr]
                guard = self._guard = FirstWriteGuard(self._inserter, self.catalog, types)
                await self.retry.run("store", lambda _a: guard.load(), stoppable=True)
            except Stopping:  # stopped while the store was unreachable: nothing was consumed
                return
            self._pool = shared_pool(s.decode_processes(), self.catalog, types, s.consumer_nice)
            await asyncio.to_thread(self._pool.start)
            m.DECODE_HELPERS.labels(self.name).set(self._pool.processes)
            await self._consume()
        finally:
            self._closing = True
            if producer is not None:
                await producer.stop()
            if self._guard is not None:
                self._guard.close()
            self._inserter.close()
            before = {} if self._started else {"before": "consuming"}  # a stop before the group was joined
            log.info("consumer.stopped", worker=self.name, **before, **self.stats)

    async def _kafka_start(self, make: Callable[[], Any], what: str) -> Any:
        """A Kafka client made by ``make`` and started, made and started again while the broker cannot be reached
        (e.g. ``up`` reviving its broker; ``broker.retry`` in the log); None when a stop was asked meanwhile. A
        start that fails, or is cancelled, closes its client (no "Unclosed" at exit)."""

        async def attempt(_n: int) -> Any:
            client = make()
            try:
                await client.start()
            except BaseException:
                await client.stop()
                raise
            return client

        try:
            return await self.retry.run(f"broker_{what}", attempt, stoppable=True, retry_on=(KafkaConnectionError,))
        except Stopping:
            return None

    def _make_consumer(self) -> AIOKafkaConsumer:
        """A group consumer of the topic with a fresh processor as its rebalance listener."""
        s = self.settings
        consumer = AIOKafkaConsumer(
            **kafka_options(self._kafka), group_id=s.consumer_group, client_id=self.name, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(100, s.session_timeout_ms // 3), max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=MAX_DLQ_REQUEST_BYTES * 4,
        )
        p = self._processor = StreamProcessor(
            consumer, lambda states: self._chain(consumer, states), self._load_watermarks, name=self.name,
            max_poll_records=s.consumer_max_poll_records, max_held=s.max_inflight_rows,
            shutdown_timeout=s.consumer_shutdown_timeout_s, tick=self._tick)
        if self._stop:
            p.request_stop()
        consumer.subscribe([s.topic], listener=p)
        return consumer

    async def _consume(self) -> None:
        s = self.settings
        consumer = await self._kafka_start(self._make_consumer, "consumer")
        if consumer is None:  # stopped before the group was joined: nothing was consumed
            return
        p = self._processor
        assert p is not None
        self._started = True
        log.info("consumer.started", worker=self.name, topic=s.topic, group=s.consumer_group,
                 dlq_partitions=self._dlq_partitions, dedup=self.dedup)
        try:
            await p.run()
        except DlqLimitExceeded as exc:
            self._fatal = exc
            log.error("consumer.dlq_limit_exceeded", worker=self.name, error=str(exc))
            raise
        except BaseException as exc:
            self._fatal = exc if isinstance(exc, Exception) else None
            raise
        finally:
            self._closing = True
            await consumer.stop()  # leaves the group
            for tp in list(p.partitions):
                p.partitions.pop(tp, None)
            self._sync_stats(p)

    def _chain(self, consumer: AIOKafkaConsumer, states: dict[TopicPartition, PartitionState]) -> Step[Fetched]:
        """A fresh chain of steps for one assignment."""
        s = self.settings
        assert self._inserter is not None and self._pool is not None
        committing = Committing(consumer, self._committed, self.name)
        flushing = Flushing(committing, self._inserter, self._dlq.send, self._dlq_watermark, self.retry,
                            self.counts["flushing"],
                            self.name, self._guard, on_stored=self.on_stored)
        batching = Batching(states, flushing, self.limit, self.counts["batching"], max_rows=s.batch_max_rows,
                            max_seconds=s.batch_max_seconds, min_seconds=s.batch_min_seconds)
        decoding = Decoding(self._pool, batching, keys=self._keys)
        batching.upstream_busy = lambda: decoding.busy
        return decoding

    @property
    def stats(self) -> dict[str, int]:
        """Every step's counters and the worker's own, one dict (a copy)."""
        out = dict.fromkeys(_STATS, 0)
        for c in self.counts.values():
            out.update(c)
        return out

    def _sync_stats(self, p: StreamProcessor) -> None:
        self.counts["worker"]["max_held"] = p.most_held
        self.counts["worker"]["rebalances"] = p.rebalances

    def _tick(self) -> None:
        if self._processor is not None:
            self._processor.observe_lag()
            self._sync_stats(self._processor)
        m.LAST_COMMIT_AGE.labels(self.name).set(time.monotonic() - self._last_commit)

    def _committed(self, offsets: dict[TopicPartition, int]) -> None:
        p = self._processor
        for tp, o in offsets.items():
            st = p.partitions.get(tp) if p is not None else None
            if st is not None:
                st.committed = o
        self.counts["worker"]["commits"] += 1
        self._last_commit = time.monotonic()
        self._lag_at_commit = sum(p.lag().values()) if p is not None else 0

    async def _dlq_watermark(self, tp: TopicPartition) -> int:
        wm = await read_dlq_watermarks(self._kafka, self.settings.dlq_topic, tp.topic, [tp.partition],
                                       self._dlq_partitions)
        return wm[tp.partition]

    async def _load_watermarks(self, tps: set[TopicPartition]) -> dict[TopicPartition, Watermarks]:
        """Watermarks of the current log (:mod:`auditlogkit.consumers.kafka.watermark_check`); all -1 with dedup off."""
        if not self.dedup or not tps:
            return {tp: Watermarks() for tp in tps}
        s, inserter, topic = self.settings, self._inserter, self.settings.topic
        assert inserter is not None
        parts = sorted(tp.partition for tp in tps)
        stored = await self.retry.run("store", lambda _a: inserter.stored_watermarks(topic), True)
        dlq = await self.retry.run("dlq", lambda _a: read_dlq_watermarks(
            self._kafka, s.dlq_topic, topic, parts, self._dlq_partitions), True)
        stored, dlq = await self.retry.run("dlq", lambda _a: verify_watermarks(
            self._kafka, topic, {p: stored.get(p, -1) for p in parts}, {p: dlq.get(p, -1) for p in parts},
            inserter.stored_at, self.catalog), True)
        return {tp: Watermarks(stored.get(tp.partition, -1), dlq.get(tp.partition, -1)) for tp in tps}
