"""The consumer-group worker: fetch -> decode/validate -> per-partition batches -> DLQ -> insert -> commit.

Contract:
- Fetch with ``getmany``; the records go in chunks to the decode pool (:mod:`consumers.decode_pool`: helper
  processes validate them and encode the valid rows as Native blocks) while the next fetch runs; the results are
  applied in fetch order, each message to its partition's open :class:`~consumers.batch.PartitionBatch`.
  A decode that straddles a rebalance is dropped whole (the owner fetches it again from the committed offset).
  A batch is flushed when it holds ``batch_max_rows`` messages or is ``batch_max_seconds`` old.
- Flush of one partition range, in this order: (1) send the dead letters of the range and await every ack,
  (2) insert the valid rows in ONE insert with the range's deduplication token, (3) only then mark
  ``last + 1`` for commit. Offsets are committed by one committer after the work, never before both.
  At most one flush per partition is in flight, so a partition's ranges land in offset order.
- Failures of (1) or (2) are retried forever with capped exponential backoff and jitter; meanwhile nothing is
  committed, buffering continues up to ``max_inflight_rows`` messages (counting those being decoded) and then
  fetching pauses (``consumer.pause``); it resumes by itself below half of that.
- Exactly-once effect across crashes: on assignment the worker loads two watermarks per partition, the highest
  stored ``kafka_offset`` (migration 0010's aggregate) and the highest source offset already on the DLQ
  (:func:`~consumers.dlq.read_dlq_watermarks`), and skips redelivered valid/invalid messages at or below them.
  Second line: the insert deduplication token (a retried insert of a batch); third: ReplacingMergeTree + FINAL
  reads (same ``event_id``).
- Rebalance: revoked partitions are flushed and committed before the listener returns; records of partitions
  not (yet) owned are never buffered (the worker seeks back so nothing is skipped).
- DLQ-rate guard (:class:`~consumers.dlq.DlqLimit`): when tripped, :meth:`run` stops without flushing the
  buffered window and raises :class:`~consumers.dlq.DlqLimitExceeded`.
- :meth:`request_stop`: stop fetching, flush, commit, leave the group and return (bounded by
  ``consumer_shutdown_timeout_s``; unfinished ranges stay uncommitted and are redelivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count
from typing import Any, TypeVar
from zlib import crc32

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from auditlog.kafka import KafkaConnection, kafka_options
from auditlog.logs import get_logger
from auditlog.settings import Settings
from auditlog.store import Store
from consumers import metrics as m
from consumers.batch import BatchBuffer, PartitionBatch
from consumers.decode import Chunk, DecodedChunk, DecodeStep, dead_letter
from consumers.decode_pool import DecodePool, shared_pool
from consumers.dlq import (
    MAX_DLQ_REQUEST_BYTES,
    DlqLimit,
    DlqLimitExceeded,
    DlqSender,
    make_dlq_producer,
    read_dlq_watermarks,
)
from consumers.incarnation import verify_watermarks
from consumers.inserter import Inserter
from schemas.catalog import Catalog

log = get_logger("consumers.worker")
T = TypeVar("T")
_ids = count(1)
_CHUNK_MESSAGES = 1000  # messages per decode call: small enough to spread over the pool's processes


@dataclass(slots=True)
class _Decoding:
    """Records handed to the decode pool: per partition its records, how many of them (a prefix) are skipped,
    and the pieces (one per :class:`Chunk`) the rest was cut into; and the pending result."""

    generation: int
    parts: list[tuple[TopicPartition, list[Any], int, list[list[Any]]]]
    task: asyncio.Future[list[DecodedChunk]]
    messages: int


def backoff_delay(attempt: int, base: float = 0.1, cap: float = 30.0) -> float:
    """Capped exponential backoff with jitter: uniform in [d/2, d], d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2 ** min(attempt, 30)))
    return d / 2 + random.uniform(0, d / 2)


class _Stopping(Exception):
    """A stop was requested while a stoppable step was being retried."""


class _Listener(ConsumerRebalanceListener):
    def __init__(self, worker: ConsumerWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.worker._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.worker._on_assigned(set(assigned))


class ConsumerWorker:
    """One member of the consumer group. ``await run()`` until :meth:`request_stop`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        catalog: Catalog | None = None,
        name: str | None = None,
        retry_base_s: float = 0.1,
        wrap_dlq: Callable[[DlqSender], Any] | None = None,
    ) -> None:
        """``wrap_dlq`` (tests only) may wrap the DLQ sender, e.g. to make the DLQ unwritable for a while."""
        self.settings = settings
        self._kafka = KafkaConnection.from_settings(settings)
        self.store = store
        self.name = name or f"{settings.consumer_group}-{os.getpid()}-{next(_ids)}"
        self.decoder = DecodeStep(catalog)
        self.dedup = settings.consumer_dedup
        self.retry_base_s = retry_base_s
        self._wrap_dlq = wrap_dlq
        self.buffer = BatchBuffer()
        self.limit = DlqLimit(settings.dlq_limit_ratio, settings.dlq_limit_window)
        self.stats: dict[str, int] = dict.fromkeys(
            ("consumed", "stored", "dead_lettered", "skipped_stored", "skipped_dlq", "flushes", "commits",
             "store_retries", "dlq_retries", "max_held", "rebalances"),
            0,
        )
        self._topic = settings.topic
        self._stop_requested = False
        self._aborting = False
        self._closing = False
        self._started = False
        self._fatal: BaseException | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._inserter: Inserter | None = None
        self._dlq: DlqSender | None = None
        self._dlq_partitions = 1
        self._owned: set[TopicPartition] = set()
        self._wm_stored: dict[TopicPartition, int] = {}
        self._wm_dlq: dict[TopicPartition, int] = {}
        self._inflight: dict[TopicPartition, asyncio.Task[None]] = {}
        self._inflight_msgs: dict[TopicPartition, int] = {}
        self._pending_commit: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._commit_lock: asyncio.Lock | None = None
        self._paused = False
        self._failing: dict[str, bool] = {"store": False, "dlq": False}
        self._last_commit = time.monotonic()
        self._lag: dict[int, int] = {}
        self._lag_at_commit = 0
        self._last_observe = 0.0
        self._held_snapshot = 0
        self._pool: DecodePool | None = None
        self._pending_msgs = 0  # fetched, being decoded: counted by the backpressure
        self._generation = 0  # +1 at every rebalance callback: decodes of an older one are dropped

    # ----- public interface ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask :meth:`run` to stop fetching, flush, commit, leave the group and return (thread-safe)."""
        self._stop_requested = True

    def status(self) -> dict[str, Any]:
        """Readiness and progress (safe to call from another thread)."""
        age = time.monotonic() - self._last_commit
        lag = dict(self._lag)
        total_lag = sum(lag.values())
        stalled = total_lag > 0 and age > self.settings.consumer_stall_seconds and total_lag >= self._lag_at_commit
        return {
            "worker": self.name,
            "ready": self._started and not self._closing and self._fatal is None and not stalled,
            "started": self._started,
            "stalled": stalled,
            "error": str(self._fatal) if self._fatal else None,
            "assigned": sorted(tp.partition for tp in list(self._owned)),
            "last_commit_age_s": round(age, 3),
            "lag": lag,
            "lag_total": total_lag,
            "paused": self._paused,
            "store_failing": self._failing["store"],
            "dlq_failing": self._failing["dlq"],
            "held_messages": self._held_snapshot,
            "decode_helpers": self._pool.processes if self._pool else None,
            **self.stats,
        }

    async def run(self) -> None:
        """Join the group and consume until :meth:`request_stop`; then flush, commit, leave, return.

        Raises :class:`DlqLimitExceeded` when the DLQ-rate guard trips (after leaving the group).
        """
        s = self.settings
        self._commit_lock = asyncio.Lock()
        self._inserter = Inserter(self.store, dedup=self.dedup, name=f"inserter-{self.name}")
        producer = make_dlq_producer(self._kafka)
        await producer.start()
        try:
            parts = await producer.partitions_for(s.dlq_topic)
            if not parts:
                raise RuntimeError(f"DLQ topic {s.dlq_topic!r} has no partitions (create it first)")
            self._dlq_partitions = len(parts)
            self._dlq = DlqSender(producer, s.dlq_topic, self._dlq_partitions, s.consumer_group)
            if self._wrap_dlq is not None:
                self._dlq = self._wrap_dlq(self._dlq)
            consumer = AIOKafkaConsumer(
                **kafka_options(self._kafka),
                group_id=s.consumer_group,
                client_id=self.name,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=s.session_timeout_ms,
                heartbeat_interval_ms=max(100, s.session_timeout_ms // 3),
                max_partition_fetch_bytes=4 * 1024 * 1024,
                fetch_max_bytes=MAX_DLQ_REQUEST_BYTES * 4,
            )
            consumer.subscribe([s.topic], listener=_Listener(self))
            await consumer.start()
            self._consumer = consumer
            self._started = True
            log.info("consumer.started", worker=self.name, topic=s.topic, group=s.consumer_group,
                     dlq_partitions=self._dlq_partitions, dedup=self.dedup)
            try:
                await self._consume()
                await self._drain(s.consumer_shutdown_timeout_s)
                if self._fatal is not None:
                    raise RuntimeError(f"consumer worker failed: {self._fatal!r}") from self._fatal
            except DlqLimitExceeded as exc:
                self._fatal = exc
                log.error("consumer.dlq_limit_exceeded", worker=self.name, error=str(exc))
                await self._abort()
                raise
            except BaseException as exc:
                self._fatal = exc if isinstance(exc, Exception) else None
                await self._abort()
                raise
            finally:
                self._closing = True
                await consumer.stop()  # leaves the group
                log.info("consumer.stopped", worker=self.name, **self.stats)
        finally:
            self._closing = True
            await producer.stop()
            self._inserter.close()
            for tp in list(self._lag):
                self._drop_lag_metric(tp)

    # ----- the loop -----------------------------------------------------------------------------------
    async def _consume(self) -> None:
        """The loop. Decoding is pipelined: chunk k+1 is fetched and handed to the decode pool before chunk k's
        results are applied to the batches, so fetching, decoding and inserting overlap."""
        c = self._c
        s = self.settings
        assert self._inserter is not None
        inserter = self._inserter
        try:
            types = await self._retry("store", lambda _a: inserter.column_types(), stoppable=True)
        except _Stopping:
            return
        self._pool = shared_pool(s.decode_processes(), self.decoder.catalog, types)
        await asyncio.to_thread(self._pool.start)
        m.DECODE_HELPERS.labels(self.name).set(self._pool.processes)
        pending: _Decoding | None = None
        try:
            while not self._stop_requested:
                records = await c.getmany(timeout_ms=5 if pending else 100, max_records=s.consumer_max_poll_records)
                submitted = self._submit(records) if records else None
                if pending is not None:
                    self._apply(pending, await pending.task)
                pending = submitted
                self._schedule(force=False)
                await self._commit()
                self._backpressure()
                self._observe()
            if pending is not None:
                self._apply(pending, await pending.task)
                pending = None
        finally:
            if pending is not None:
                pending.task.cancel()
                await asyncio.gather(pending.task, return_exceptions=True)
            self._pending_msgs = 0

    def _submit(self, records: dict[TopicPartition, list[Any]]) -> _Decoding | None:
        """Hand the owned partitions' records to the decode pool; the rest is sought back (fetched again)."""
        received_at = datetime.now(UTC)
        parts: list[tuple[TopicPartition, list[Any], int, list[list[Any]]]] = []
        chunks: list[Chunk] = []
        for tp, msgs in records.items():
            if not msgs:
                continue
            if tp not in self._owned:
                # revoking, or watermarks not loaded yet: never buffer; fetch these again later
                with contextlib.suppress(IllegalStateError):
                    self._c.seek(tp, msgs[0].offset)
                continue
            both = min(self._wm_stored.get(tp, -1), self._wm_dlq.get(tp, -1))
            skip = 0  # a prefix at or below both watermarks: stored or dead-lettered before, not decoded again
            if msgs[0].offset <= both:
                skip = next((i for i, msg in enumerate(msgs) if msg.offset > both), len(msgs))
            up_to = self._wm_stored.get(tp, -1)
            pieces = [msgs[i : i + _CHUNK_MESSAGES] for i in range(skip, len(msgs), _CHUNK_MESSAGES)]
            parts.append((tp, msgs, skip, pieces))
            chunks.extend(Chunk(tp.topic, tp.partition, [m.offset for m in piece], [m.value for m in piece],
                                received_at, up_to) for piece in pieces)
        if not parts:
            return None
        assert self._pool is not None
        n = sum(len(msgs) for _, msgs, _, _ in parts)
        self._pending_msgs += n
        task = asyncio.ensure_future(self._pool.decode(chunks))
        t0 = time.perf_counter()
        task.add_done_callback(lambda _t: m.DECODE_SECONDS.observe(time.perf_counter() - t0))
        return _Decoding(self._generation, parts, task, n)

    def _apply(self, job: _Decoding, decoded: list[DecodedChunk]) -> None:
        """Put decoded records into their partitions' batches, in offset order (synchronous: no rebalance can
        interleave). Records fetched before a rebalance are dropped: the owner fetches them again from the
        committed offset."""
        self._pending_msgs -= job.messages
        if job.generation != self._generation:
            log.info("messages.dropped_after_rebalance", worker=self.name, messages=job.messages)
            return
        observe = self.limit.observe
        results = iter(decoded)
        for tp, msgs, skip, pieces in job.parts:
            b = self.buffer.batch_for(tp, msgs[0].offset)
            fp = b.fingerprint
            for msg in msgs:
                fp = crc32(msg.value or b"", fp)
            b.fingerprint = fp
            wm_d = self._wm_dlq.get(tp, -1)
            up_to = self._wm_stored.get(tp, -1)
            n_rows, n_dead = b.rows, len(b.dead)
            n_skip_s, n_skip_d = skip, 0
            for msg in msgs[:skip]:
                b.add_skipped(msg.offset)
            for piece in pieces:
                d = next(results)
                bad = {j: (f, r) for j, f, r in d.invalid}
                for j, msg in enumerate(piece):
                    hit = bad.get(j)
                    if hit is not None:
                        if msg.offset <= wm_d:
                            b.add_skipped(msg.offset)
                            n_skip_d += 1
                        else:
                            observe(True)
                            b.add_dead(msg.offset, dead_letter(msg, *hit))
                    elif msg.offset <= up_to:
                        b.add_skipped(msg.offset)
                    else:
                        observe(False)
                n_skip_s += d.already_stored
                b.add_block(piece[-1].offset, d.block, d.rows)
            self.stats["consumed"] += len(msgs)
            m.CONSUMED.labels(tp.topic).inc(len(msgs))
            if n_skip_s or n_skip_d:
                self.stats["skipped_stored"] += n_skip_s
                self.stats["skipped_dlq"] += n_skip_d
                m.SKIPPED.labels(tp.topic, "stored").inc(n_skip_s)
                m.SKIPPED.labels(tp.topic, "dead_lettered").inc(n_skip_d)
                log.info("messages.skipped_redelivered", partition=tp.partition, first=msgs[0].offset,
                         stored=n_skip_s, dead_lettered=n_skip_d, rows_before=n_rows, dead_before=n_dead)
        self.stats["max_held"] = max(self.stats["max_held"], self._held())

    def _held(self) -> int:
        return self.buffer.messages + sum(self._inflight_msgs.values()) + self._pending_msgs

    def _schedule(self, force: bool) -> None:
        s = self.settings
        due = self.buffer.partitions() if force else self.buffer.due(s.batch_max_rows, s.batch_max_seconds)
        for tp in due:
            if tp in self._inflight:
                continue
            b = self.buffer.take(tp)
            if b is not None:
                self._start_flush(b)

    def _start_flush(self, b: PartitionBatch) -> None:
        task = asyncio.create_task(self._flush(b), name=f"flush-{b.tp.partition}-{b.first}")
        self._inflight[b.tp] = task
        self._inflight_msgs[b.tp] = b.messages
        task.add_done_callback(functools.partial(self._flush_done, b.tp))

    def _flush_done(self, tp: TopicPartition, task: asyncio.Task[None]) -> None:
        if self._inflight.get(tp) is task:
            del self._inflight[tp]
            self._inflight_msgs.pop(tp, None)
        if not task.cancelled() and task.exception() is not None and self._fatal is None:
            self._fatal = task.exception()
            log.error("flush.failed", worker=self.name, partition=tp.partition, error=repr(task.exception()))
            self._stop_requested = True

    async def _flush(self, b: PartitionBatch) -> None:
        """(1) dead letters acked, (2) rows inserted, (3) offset marked for the committer. Retries forever."""
        t0 = time.perf_counter()
        tp = b.tp
        if b.dead:
            await self._retry("dlq", lambda attempt: self._send_dead(b, attempt))
        if b.rows:
            assert self._inserter is not None
            inserter = self._inserter
            token = b.dedup_token()
            await self._retry("store", lambda attempt: inserter.insert(b.blocks, b.rows, token))
        self._pending_commit[tp] = b.commit_offset
        ms = (time.perf_counter() - t0) * 1000
        self.stats["flushes"] += 1
        self.stats["stored"] += b.rows
        self.stats["dead_lettered"] += len(b.dead)
        m.STORED.labels(tp.topic).inc(b.rows)
        m.BATCH_ROWS.observe(b.messages)
        m.FLUSH_SECONDS.observe(ms / 1000)
        for d in b.dead:
            m.DEAD_LETTERED.labels(tp.topic, d.field).inc()
            log.info("message.dead_lettered", partition=d.partition, offset=d.offset, field=d.field,
                     reason=d.reason[:300])
        log.info("batch.flushed", worker=self.name, partition=tp.partition, first=b.first, last=b.last,
                 rows=b.rows, dead_lettered=len(b.dead), skipped=b.skipped, ms=round(ms, 1))

    async def _send_dead(self, b: PartitionBatch, attempt: int) -> None:
        assert self._dlq is not None
        dead = b.dead
        if attempt > 0:
            # some of the range may have landed before the failure: send only what the DLQ lacks
            wm = await read_dlq_watermarks(self._kafka, self.settings.dlq_topic, self._topic,
                                           [b.tp.partition], self._dlq_partitions)
            dead = [d for d in dead if d.offset > wm[b.tp.partition]]
        await self._dlq.send(dead)

    async def _retry(self, step: str, fn: Callable[[int], Awaitable[T]], stoppable: bool = False) -> T:
        """Run ``fn(attempt)`` until it succeeds; ``stoppable``: raise :class:`_Stopping` once a stop is requested."""
        attempt = 0
        while True:
            if stoppable and self._stop_requested:
                raise _Stopping(step)
            try:
                out = await fn(attempt)
                if attempt:
                    log.info(f"{step}.recovered", worker=self.name, attempts=attempt + 1)
                self._failing[step] = False
                return out
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any store/broker failure is retried, never committed
                self._failing[step] = True
                delay = backoff_delay(attempt, self.retry_base_s, self.settings.consumer_retry_max_seconds)
                self.stats[f"{step}_retries"] += 1
                m.RETRIES.labels(step).inc()
                log.warning(f"{step}.retry", worker=self.name, attempt=attempt + 1, delay_s=round(delay, 3),
                            error=f"{type(exc).__name__}: {str(exc)[:300]}")
                await asyncio.sleep(delay)
                attempt += 1

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit the ranges whose work is done (the committer: always after the DLQ acks and the insert)."""
        if not self._pending_commit:
            return
        assert self._commit_lock is not None
        async with self._commit_lock:
            c = self._c
            assigned = c.assignment()
            offsets = {
                tp: o for tp, o in self._pending_commit.items() if (only is None or tp in only) and tp in assigned
            }
            for tp in list(self._pending_commit):
                if only is None or tp in only:
                    del self._pending_commit[tp]
            if not offsets:
                return
            try:
                await c.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # the group moved on: the new owner's watermarks cover these ranges
                m.COMMITS.labels("rebalanced").inc()
                log.warning("commit.failed", worker=self.name, error=str(exc)[:200], retry=False)
                return
            except Exception as exc:  # transient: keep the newest offset and retry next round
                m.COMMITS.labels("error").inc()
                log.warning("commit.failed", worker=self.name, error=repr(exc)[:200], retry=True)
                for tp, o in offsets.items():
                    self._pending_commit[tp] = max(o, self._pending_commit.get(tp, o))
                return
            m.COMMITS.labels("ok").inc()
            self.stats["commits"] += 1
            self._committed.update(offsets)
            self._last_commit = time.monotonic()
            self._lag_at_commit = sum(self._lag.values())

    def _backpressure(self) -> None:
        c = self._c
        held = self._held()
        limit = self.settings.max_inflight_rows
        if not self._paused and held >= limit:
            self._paused = True
            log.warning("consumer.paused", worker=self.name, held=held, limit=limit)
        elif self._paused and held <= limit // 2:
            self._paused = False
            c.resume(*c.assignment())
            log.info("consumer.resumed", worker=self.name, held=held)
        if self._paused:
            c.pause(*c.assignment())  # also partitions assigned since
        self._held_snapshot = held
        m.PAUSED.labels(self.name).set(int(self._paused))
        m.INFLIGHT.labels(self.name).set(held)

    def _observe(self, force: bool = False) -> None:
        now = time.monotonic()
        owned = self._owned
        if not force and now - self._last_observe < 1.0 and all(tp.partition in self._lag for tp in owned):
            return
        self._last_observe = now
        c = self._c
        for tp in owned:
            hw = c.highwater(tp)
            if hw is None:
                continue
            lag = max(0, int(hw) - self._committed.get(tp, 0))
            self._lag[tp.partition] = lag
            m.LAG.labels(tp.topic, str(tp.partition)).set(lag)
        m.LAST_COMMIT_AGE.labels(self.name).set(now - self._last_commit)

    def _drop_lag_metric(self, partition: int) -> None:
        self._lag.pop(partition, None)
        with contextlib.suppress(KeyError):
            m.LAG.remove(self._topic, str(partition))

    @property
    def _c(self) -> AIOKafkaConsumer:
        assert self._consumer is not None
        return self._consumer

    # ----- stop paths ---------------------------------------------------------------------------------
    async def _drain(self, timeout: float, only: set[TopicPartition] | None = None) -> bool:
        """Flush every open batch (of ``only``), wait for the flushes, commit. False if ``timeout`` passed."""
        deadline = time.monotonic() + timeout

        def mine(tp: TopicPartition) -> bool:
            return only is None or tp in only

        while True:
            for tp in self.buffer.partitions():
                if mine(tp) and tp not in self._inflight:
                    b = self.buffer.take(tp)
                    if b is not None:
                        self._start_flush(b)
            tasks = [t for tp, t in self._inflight.items() if mine(tp)]
            if not tasks and not any(mine(tp) for tp in self.buffer.partitions()):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for tp, t in list(self._inflight.items()):
                    if mine(tp):
                        t.cancel()
                dropped = self.buffer.drop([tp for tp in self.buffer.partitions() if mine(tp)])
                log.warning("consumer.drain_timeout", worker=self.name, timeout_s=timeout,
                            cancelled=len(tasks), dropped_uncommitted=dropped)
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._commit(only)
                return False
            if tasks:
                await asyncio.wait(tasks, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            await self._commit(only)
        await self._commit(only)
        return True

    async def _abort(self) -> None:
        """Fatal stop: cancel flushes, drop buffers (uncommitted, redelivered later), commit finished work."""
        self._aborting = True
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.buffer.drop(self.buffer.partitions())
        try:
            await self._commit()
        except Exception as exc:
            log.warning("commit.failed", worker=self.name, error=repr(exc)[:200], during="abort")

    # ----- rebalance ----------------------------------------------------------------------------------
    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._generation += 1
        self._owned = self._owned - revoked  # a new set: status() may be iterating the old one
        if self._closing or not revoked:
            return
        self.stats["rebalances"] += 1
        if self._aborting:
            self.buffer.drop(revoked)
            return
        t0 = time.perf_counter()
        complete = await self._drain(self.settings.consumer_shutdown_timeout_s, only=revoked)
        for tp in revoked:
            self._wm_stored.pop(tp, None)
            self._wm_dlq.pop(tp, None)
            self._committed.pop(tp, None)
            self._drop_lag_metric(tp.partition)
        log.info("consumer.rebalanced", worker=self.name, phase="revoked",
                 partitions=sorted(tp.partition for tp in revoked), flushed=complete,
                 ms=round((time.perf_counter() - t0) * 1000, 1))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._generation += 1
        if self._closing:
            return
        stale = [tp for tp in self.buffer.partitions() if tp not in assigned]
        if stale:
            self.buffer.drop(stale)
        new = assigned - self._owned
        t0 = time.perf_counter()
        stored: dict[int, int] = {}
        dlq: dict[int, int] = {}
        if self.dedup and new:
            assert self._inserter is not None
            inserter = self._inserter
            s = self.settings
            try:
                stored = await self._retry("store", lambda _a: inserter.stored_watermarks(self._topic), True)
                dlq = await self._retry("dlq", lambda _a: read_dlq_watermarks(
                    self._kafka, s.dlq_topic, self._topic, [tp.partition for tp in new],
                    self._dlq_partitions), True)
                stored, dlq = await self._retry("dlq", lambda _a: verify_watermarks(
                    self._kafka, self._topic, {tp.partition: stored.get(tp.partition, -1) for tp in new},
                    {tp.partition: dlq.get(tp.partition, -1) for tp in new}, inserter.stored_at,
                    self.decoder.catalog), True)
            except _Stopping:
                log.info("consumer.rebalanced", worker=self.name, phase="assigned", stopping=True)
                return  # not owned: their records are never buffered
        for tp in new:
            self._wm_stored[tp] = stored.get(tp.partition, -1)
            self._wm_dlq[tp] = dlq.get(tp.partition, -1)
            try:
                committed = await self._c.committed(tp)
            except Exception:  # lag only
                committed = None
            self._committed[tp] = int(committed or 0)
        self._owned = set(assigned)
        log.info("consumer.rebalanced", worker=self.name, phase="assigned",
                 partitions=sorted(tp.partition for tp in assigned),
                 watermarks={tp.partition: [self._wm_stored.get(tp), self._wm_dlq.get(tp)] for tp in new},
                 ms=round((time.perf_counter() - t0) * 1000, 1))
