"""Dead letters: DLQ records, their sender, the DLQ-rate guard and the DLQ watermark.

Contract of a DLQ record (EVENT.md): the original value, key and headers, untouched, plus the headers
``dlq.error.field``, ``dlq.error.reason``, ``dlq.source.topic``, ``dlq.source.partition``,
``dlq.source.offset``, ``dlq.time`` (RFC 3339 UTC) and ``dlq.consumer.group``.

Placement: the record of source partition ``p`` goes to DLQ partition ``p % dlq_partitions``. Records of one
source partition are sent in source-offset order and each range is acknowledged before the next is sent
(aiokafka keeps one request in flight per broker, so a partition's log keeps send order). Hence the *last*
DLQ record of source ``(topic, p)`` carries the highest source offset ever dead-lettered for it:
:func:`read_dlq_watermarks` reads that from the tail of the DLQ partition (backwards in chunks), and the
worker skips redelivered invalid messages at or below it, so a crash never dead-letters a message twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from auditlogkit.consumers.decode.decoder import DeadLetter
from auditlogkit.kafka import KafkaConnection, kafka_options
from auditlogkit.schemas.event import format_ts

H_FIELD = "dlq.error.field"
H_REASON = "dlq.error.reason"
H_TOPIC = "dlq.source.topic"
H_PARTITION = "dlq.source.partition"
H_OFFSET = "dlq.source.offset"
H_TIME = "dlq.time"
H_GROUP = "dlq.consumer.group"
DLQ_HEADER_PREFIX = "dlq."
MAX_DLQ_REQUEST_BYTES = 16 * 1024 * 1024


class DlqLimitExceeded(RuntimeError):
    """Too many invalid messages: a broken producer, not bad luck. The worker stops without committing."""


class DlqLimit:
    """Like arroyo's DlqLimit: trip when more than ``ratio`` of the last ``window`` messages were invalid.

    ``ratio >= 1`` never trips. Only a full window is judged (a few bad messages at start-up do not trip it).
    """

    def __init__(self, ratio: float, window: int) -> None:
        self.ratio = ratio
        self.window = window
        self._seen = 0  # messages observed so far
        self._invalid: deque[int] = deque()  # sequence numbers of the invalid ones inside the window

    def observe(self, invalid: bool) -> None:
        self.observe_many(1, (0,) if invalid else ())

    def observe_many(self, n: int, invalid_at: Iterable[int]) -> None:
        """``n`` messages in order, of which those at the indexes ``invalid_at`` (ascending) were invalid;
        the same as ``observe(i in invalid_at)`` for each ``i < n``."""
        first = self._seen
        self._seen += n
        if self.ratio >= 1:
            return
        bad = self._invalid
        for i in invalid_at:
            seq = first + i
            bad.append(seq)
            while bad[0] <= seq - self.window:
                bad.popleft()
            if seq + 1 >= self.window and len(bad) > self.ratio * self.window:
                raise DlqLimitExceeded(
                    f"{len(bad)} of the last {self.window} messages were invalid (limit {self.ratio:.0%}, "
                    "AUDITLOG_DLQ_LIMIT_RATIO): a producer is probably broken; fix it or raise the limit, "
                    "then restart the consumer (nothing of this window was committed)"
                )


def dlq_headers(d: DeadLetter, group: str, now: datetime | None = None) -> list[tuple[str, bytes]]:
    """The original headers followed by the ``dlq.*`` headers describing the error and the source."""
    return [
        *d.headers,
        (H_FIELD, d.field.encode()),
        (H_REASON, d.reason.encode("utf-8", "replace")),
        (H_TOPIC, d.topic.encode()),
        (H_PARTITION, str(d.partition).encode()),
        (H_OFFSET, str(d.offset).encode()),
        (H_TIME, format_ts(now or datetime.now(UTC)).encode()),
        (H_GROUP, group.encode()),
    ]


def header(headers: Iterable[tuple[str, bytes]] | None, name: str) -> str | None:
    """The last value of header ``name`` as text (None when absent)."""
    out = None
    for k, v in headers or ():
        if k == name:
            out = v.decode("utf-8", "replace") if v is not None else ""
    return out


def original_headers(headers: Iterable[tuple[str, bytes]] | None) -> list[tuple[str, bytes]]:
    """The headers a producer set (``dlq.*`` removed): what a replay re-publishes."""
    return [(k, v) for k, v in headers or () if not k.startswith(DLQ_HEADER_PREFIX)]


def make_dlq_producer(kafka: str | KafkaConnection) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **kafka_options(kafka),
        acks="all",
        linger_ms=2,
        max_request_size=MAX_DLQ_REQUEST_BYTES,
        request_timeout_ms=15_000,
    )


class DlqSender:
    """Sends the dead letters of one partition range and waits for every ack (raises if any send fails)."""

    def __init__(self, producer: AIOKafkaProducer, dlq_topic: str, dlq_partitions: int, group: str) -> None:
        self.producer = producer
        self.dlq_topic = dlq_topic
        self.dlq_partitions = dlq_partitions
        self.group = group

    def partition_for(self, source_partition: int) -> int:
        return source_partition % self.dlq_partitions

    async def send(self, dead: Sequence[DeadLetter]) -> None:
        now = datetime.now(UTC)
        futures = [
            await self.producer.send(
                self.dlq_topic,
                value=d.value,
                key=d.key,
                partition=self.partition_for(d.partition),
                headers=dlq_headers(d, self.group, now),
            )
            for d in dead
        ]
        if futures:
            await asyncio.gather(*futures)


async def read_dlq_watermarks(
    kafka: str | KafkaConnection,
    dlq_topic: str,
    source_topic: str,
    source_partitions: Iterable[int],
    dlq_partitions: int,
    chunk: int = 500,
    timeout_s: float = 20.0,
) -> dict[int, int]:
    """For each source partition, the highest source offset already on the DLQ (``-1`` when none).

    Reads each DLQ partition backwards from its high watermark in chunks of ``chunk`` records until a record
    of the source partition is found (the newest one carries the maximum, see module doc) or the start is
    reached. Uses an unsubscribed consumer (no group). Raises ``TimeoutError`` when the broker does not answer.
    """
    wanted: dict[int, set[int]] = {}
    for p in source_partitions:
        wanted.setdefault(p % dlq_partitions, set()).add(p)
    out = {p: -1 for ps in wanted.values() for p in ps}
    if not wanted:
        return out
    consumer = AIOKafkaConsumer(
        **kafka_options(kafka),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_DLQ_REQUEST_BYTES,
        fetch_max_bytes=MAX_DLQ_REQUEST_BYTES * 2,
        fetch_max_wait_ms=20,
    )
    deadline = time.monotonic() + timeout_s
    try:  # started inside: a start cut short (broker gone, cancelled) is closed too
        await consumer.start()
        tps = [TopicPartition(dlq_topic, dp) for dp in sorted(wanted)]
        consumer.assign(tps)
        highwater = await fetch_highwaters(consumer, tps, deadline)
        for tp in tps:
            end = highwater[tp]
            missing = set(wanted[tp.partition])
            while missing and end > 0:
                start = max(0, end - chunk)
                found = await _scan(consumer, tp, start, end, source_topic, deadline)
                for p in list(missing):
                    if p in found:
                        out[p] = found[p]
                        missing.discard(p)
                end = start
    finally:
        await consumer.stop()
    return out


async def fetch_highwaters(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], deadline: float
) -> dict[TopicPartition, int]:
    """High watermarks of ``tps`` (assigned to ``consumer``; their positions are moved to 0) from fetch
    responses (``end_offsets`` is unreliable on some brokers, e.g. Tansu). ``TimeoutError`` after ``deadline``."""
    for tp in tps:
        consumer.seek(tp, 0)
    out: dict[TopicPartition, int] = {}
    while True:
        await consumer.getmany(*tps, timeout_ms=50, max_records=1)
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is not None:
                out[tp] = int(hw)
        if len(out) == len(tps):
            return out
        if time.monotonic() > deadline:
            raise TimeoutError(f"no high watermark for {sorted(set(tps) - set(out))}")


async def _scan(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int, source_topic: str, deadline: float
) -> dict[int, int]:
    """Max source offset per source partition among DLQ records ``start <= offset < end``."""
    found: dict[int, int] = {}
    consumer.seek(tp, start)
    pos = start
    while pos < end:
        batch = await consumer.getmany(tp, timeout_ms=500, max_records=end - pos)
        recs: list[Any] = batch.get(tp, [])
        if not recs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"DLQ {tp} did not deliver offsets {pos}..{end - 1}")
            # the first offset may be gone (retention): the consumer resets to the earliest one
            continue
        for r in recs:
            if r.offset >= end:
                break
            if header(r.headers, H_TOPIC) == source_topic:
                p, o = header(r.headers, H_PARTITION), header(r.headers, H_OFFSET)
                if p is not None and o is not None and p.isdigit() and o.isdigit():
                    found[int(p)] = max(found.get(int(p), -1), int(o))
        pos = recs[-1].offset + 1
    return found
