"""One stream's delivery while its deliverer holds the stream's lease: read, send, save, again.

Contract of :class:`StreamWorker`:
- it starts from the stream's saved position (read after the lease was won) and repeats: the next batch
  (:func:`auditlogkit.query_api.streams.reader.next_batch`: at most ``streams_batch_max_events``, read again at once when more
  is waiting, else after ``streams_batch_seconds``, or sooner once :meth:`~StreamWorker.wake` says new events
  were stored, at most every quarter of that), send it, and only once it is delivered save the position
  after it (:meth:`~auditlogkit.query_api.streams.store.StreamStore.save_position`): at least once, nothing skipped;
- a failed send is retried, the same batch with the same batch id, after a backoff (:func:`backoff`: exponential
  with jitter from 1 s, ``Retry-After`` honoured, at most ``streams_backoff_max_seconds``; a refusal such as a 4xx
  waits the longest); each failure is recorded (``failing`` with ``last_error``), a delivery clears ``failing``;
- it only sends while its lease lasts: a send is cut at the lease's deadline (so it has ended before another
  deliverer can claim the stream); a lost lease (:attr:`lease` set to None) ends it after the current step;
- :meth:`request_stop` ends it after the batch in flight (a send under way completes and is saved; a backoff
  is cut short, its batch left for the next holder);
- logs ``stream.delivered`` / ``stream.delivery_failed`` (never a secret: replies are scrubbed) and keeps the
  metrics of :mod:`auditlogkit.query_api.streams.metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from auditlogkit.query_api.read.tail_position import Position
from auditlogkit.query_api.streams import reader
from auditlogkit.query_api.streams.destinations import destination
from auditlogkit.query_api.streams.destinations.base import Context, Outcome, failed
from auditlogkit.query_api.streams.destinations.http import Clients
from auditlogkit.query_api.streams.metrics import DELIVERED, FAILURES, LAG
from auditlogkit.query_api.streams.model import Delivery, Lease, Stream
from auditlogkit.query_api.streams.ssrf import Resolver, system_resolver
from auditlogkit.query_api.streams.store import StreamStore
from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.query_api.streams.worker")
IDLE_SAVE_SECONDS = 10.0  # a position that passed only rows the stream does not see is saved this often
MIN_SEND_SECONDS = 1.0  # a send needs at least this much of its lease left
BATCH_NAMESPACE = uuid.UUID("6b1f3c52-3c8a-4a53-9a55-0c8e5f8d2a11")


@dataclass(frozen=True, slots=True)
class Tuning:
    """The deliverer's settings a worker uses."""

    batch_max_events: int = 1_000
    batch_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    request_timeout_seconds: float = 10.0


def backoff(attempt: int, outcome: Outcome, cap: float) -> float:
    """Seconds before the next attempt (module contract); ``attempt`` counts from 0."""
    if not outcome.retryable:
        return cap * random.uniform(0.8, 1.0)
    if outcome.retry_after is not None:
        return min(outcome.retry_after, cap)
    return min(cap, 2.0 ** attempt) * random.uniform(0.5, 1.0)


def batch_id(stream_id: str, before: Position, after: Position) -> str:
    """The id of the batch between two positions: the same for every send of it, also after a restart."""
    text = f"{stream_id}|{sorted(before.items())}|{sorted(after.items())}"
    return uuid.uuid5(BATCH_NAMESPACE, text).hex


class StreamWorker:
    """One stream's delivery loop (module contract)."""

    def __init__(self, stream: Stream, lease: Lease, repo: StreamStore, tuning: Tuning, *,
                 resolver: Resolver = system_resolver) -> None:
        self.stream = stream
        self.lease: Lease | None = lease
        self.repo = repo
        self.tuning = tuning
        self.resolver = resolver
        self._stop = asyncio.Event()
        self._stored = asyncio.Event()  # new events were stored since the last read (:meth:`wake`)
        self._seq = 0
        self.release_on_exit = True

    def request_stop(self) -> None:
        self._stop.set()

    def wake(self) -> None:
        """New events were stored: a caught-up stream reads again without waiting out its pause."""
        self._stored.set()

    async def _await_events(self, since: float) -> bool:
        """A caught-up stream's pause: until ``streams_batch_seconds`` after ``since`` (its last read), or a
        :meth:`wake` (no sooner than a quarter of that after it, so a busy consumer's flushes do not turn into a
        read each); False when a stop came first."""
        pause = self.tuning.batch_seconds
        stored = asyncio.ensure_future(self._stored.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({stored, stop}, timeout=max(0.0, since + pause - time.monotonic()),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stored.cancel()
            stop.cancel()
        if self.stopping:
            return False
        if self._stored.is_set():
            return await self._pause(since + pause / 4 - time.monotonic())
        return True

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _version(self) -> int:
        assert self.lease is not None
        self._seq += 1
        return (self.lease.term << 32) + self._seq

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; False when a stop came first."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            return True
        return False

    async def run(self) -> None:
        sid = self.stream.id
        delivery = await asyncio.to_thread(self.repo.delivery, sid)
        if delivery is None:
            log.warning("stream.no_position", stream=sid)
            return
        position = dict(delivery.position)
        clients = Clients(self.tuning.request_timeout_seconds)
        recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        idle_saved = time.monotonic()
        try:
            while not self.stopping and self.lease is not None:
                read_at = time.monotonic()
                self._stored.clear()  # what is stored from now on is for the next read
                batch = await asyncio.to_thread(
                    reader.next_batch, self.repo.store, self.repo.topic, self.stream, position, self.repo.catalog,
                    limit=self.tuning.batch_max_events, detail_max=self.repo.detail_max, recent=recent,
                    stored_end=self.repo.stored_end, shared=self.repo.shared_read)
                if batch.events:
                    LAG.labels(sid).set(_age(batch.received[0]))
                    saved = await self._deliver(batch, position, delivery, clients)
                    if saved is None:
                        return
                    delivery = saved
                    LAG.labels(sid).set(_age(batch.oldest_left) if batch.oldest_left else 0.0)
                elif not batch.more:
                    LAG.labels(sid).set(0.0)
                position = batch.after
                if position != delivery.position and time.monotonic() - idle_saved >= IDLE_SAVE_SECONDS:
                    delivery = await asyncio.to_thread(self.repo.save_position, sid, delivery, position, 0,
                                                       self._version())
                    idle_saved = time.monotonic()
                if not batch.more and not await self._await_events(read_at):
                    break
            if self.lease is not None and position != delivery.position:
                await asyncio.to_thread(self.repo.save_position, sid, delivery, position, 0, self._version())
        finally:
            await clients.aclose()
            with contextlib.suppress(KeyError):  # another deliverer reports its lag from now on
                LAG.remove(sid)

    async def _deliver(self, batch: reader.Batch, before: Position, delivery: Delivery,
                       clients: Clients) -> Delivery | None:
        """Send ``batch`` until it is delivered (its saved delivery row) or the worker must end (None)."""
        s = self.stream
        ctx = Context(s.id, s.org_id, batch_id(s.id, before, batch.after), s.destination.fields,
                      s.destination.secrets, allow=self.repo.allow, resolver=self.resolver, first=batch.places[0],
                      last=batch.places[-1], received_at=batch.received[0], clients=clients)
        send = destination(s.destination.type).send
        attempt = 0
        while True:
            lease = self.lease
            if lease is None:
                return None
            budget = min(self.tuning.request_timeout_seconds, lease.deadline - time.monotonic())
            if budget < MIN_SEND_SECONDS:  # the deliverer renews the lease meanwhile (or takes it away)
                if self.stopping or not await self._pause(0.2):
                    return None
                continue
            ctx.timeout = budget
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(budget):
                    outcome = await send(batch.events, ctx)
            except TimeoutError:
                outcome = failed(f"no reply within {budget:.1f} s")
            ms = round((time.monotonic() - t0) * 1000)
            if outcome.delivered:
                saved = await asyncio.to_thread(self.repo.save_position, s.id, delivery, batch.after,
                                                len(batch.events), self._version())
                DELIVERED.labels(s.id).inc(len(batch.events))
                log.info("stream.delivered", stream=s.id, org_id=s.org_id, destination=s.destination.type,
                         batch=ctx.batch_id, events=len(batch.events), attempt=attempt + 1, ms=ms,
                         http_status=outcome.http_status)
                return saved
            FAILURES.labels(s.id).inc()
            delivery = await asyncio.to_thread(self.repo.record_error, s.id, delivery, outcome.message,
                                               outcome.http_status, self._version())
            wait = backoff(attempt, outcome, self.tuning.backoff_max_seconds)
            log.warning("stream.delivery_failed", stream=s.id, org_id=s.org_id, destination=s.destination.type,
                        batch=ctx.batch_id, events=len(batch.events), attempt=attempt + 1, ms=ms,
                        http_status=outcome.http_status, retryable=outcome.retryable, message=outcome.message,
                        retry_in_s=round(wait, 2))
            attempt += 1
            if self.stopping or not await self._pause(wait):
                return None


def _age(ts: datetime) -> float:
    return max(0.0, (datetime.now(UTC) - ts).total_seconds())
