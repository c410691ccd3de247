"""Unit contracts of the consumer's small steps (no broker, no store)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import TopicPartition

from auditlogkit.consumers.batch import FlushJob, PartitionBatch
from auditlogkit.consumers.cli import reason_class
from auditlogkit.consumers.decode.decoder import Chunk, DeadLetter, DecodedChunk, Decoder, dead_letter
from auditlogkit.consumers.fate import Fate, Watermarks, fate
from auditlogkit.consumers.kafka.dlq import (
    H_FIELD,
    H_OFFSET,
    H_PARTITION,
    H_REASON,
    H_TOPIC,
    DlqLimit,
    DlqLimitExceeded,
    dlq_headers,
    header,
    original_headers,
)
from auditlogkit.consumers.partition import PartitionState
from auditlogkit.consumers.retry import backoff_delay
from auditlogkit.consumers.steps import Decoded, MessageRejected, Step
from auditlogkit.consumers.steps.batching import Batching
from auditlogkit.schemas.rows import EVENT_COLUMNS
from tests.factories import make_event


@dataclass
class Rec:
    value: bytes | None
    topic: str = "t"
    partition: int = 2
    offset: int = 41
    key: bytes | None = b"acme"
    headers: tuple[tuple[str, bytes], ...] = field(default_factory=lambda: (("trace", b"abc"),))


class NoEncoder:
    def encode(self, rows: Any, tail: Any = ()) -> bytes:
        return b"%d rows" % len(rows)


def test_decode_valid_row_in_column_order() -> None:
    ev = make_event()
    rows = Decoder().stored_rows(Chunk("t", 2, [41], [json.dumps(ev).encode()], datetime.now(UTC)))
    assert len(rows) == 1
    row = rows[0]
    assert len(row) == len(EVENT_COLUMNS)
    named = dict(zip(EVENT_COLUMNS, row, strict=True))
    assert str(named["event_id"]) == ev["event_id"]
    assert (named["kafka_topic"], named["kafka_partition"], named["kafka_offset"]) == ("t", 2, 41)


@pytest.mark.parametrize(("raw", "field_"), [
    (None, "message"),
    (b"\xff\xfe{}", "message"),
    (b"{nope", "message"),
    (b"x" * (1024 * 1024 + 1), "message"),
    (json.dumps(make_event(action="vm.fly")).encode(), "action"),
    (json.dumps(make_event(status="MAYBE")).encode(), "status"),
    (json.dumps({**make_event(), "extra": 1}).encode(), "extra"),
])
def test_decode_invalid_is_a_dead_letter_never_an_exception(raw: bytes | None, field_: str) -> None:
    rec = Rec(raw)
    decoded = Decoder().decode_chunk(Chunk(rec.topic, rec.partition, [rec.offset], [raw], datetime.now(UTC)),
                                     NoEncoder())  # type: ignore[arg-type]
    assert decoded.rows == 0 and len(decoded.invalid) == 1
    index, field_name, reason = decoded.invalid[0]
    assert index == 0 and field_name == field_ and reason
    out = dead_letter(rec, field_name, reason)  # as the batching step does
    assert isinstance(out, DeadLetter)
    assert out.value == raw and out.key == b"acme" and out.headers == (("trace", b"abc"),)


def test_dlq_headers_keep_originals_and_add_coordinates() -> None:
    d = DeadLetter("t", 3, 99, b"k", b"v", (("trace", b"abc"),), "actor.ip", "not a valid IPv4 or IPv6 address")
    h = dlq_headers(d, "grp")
    assert h[0] == ("trace", b"abc")
    assert header(h, H_FIELD) == "actor.ip" and header(h, H_REASON).startswith("not a valid")
    assert (header(h, H_TOPIC), header(h, H_PARTITION), header(h, H_OFFSET)) == ("t", "3", "99")
    assert original_headers(h) == [("trace", b"abc")]


def test_partition_batch_range_token_and_commit_offset() -> None:
    tp = TopicPartition("audit.events", 4)
    st = PartitionState(tp)
    b = st.batch(10)
    assert st.batch(99) is b  # one open batch per partition
    b.add_skipped(10)
    b.add_block(11, b"<native block>", 1)
    b.add_dead(12, DeadLetter("audit.events", 4, 12, None, b"x", (), "message", "bad"))
    assert b.messages == 3 and b.commit_offset == 13
    b.fingerprint = 0xBEEF
    assert b.dedup_token() == "audit.events:4:10-12:0000beef"  # range + crc32 of the range's bytes
    assert st.take() is b and st.open is None


def test_flush_job_joins_tokens_of_batches_with_rows_and_commits_each_partition() -> None:
    a, b, c = (PartitionBatch(TopicPartition("t", p), first=0) for p in (0, 1, 2))
    a.add_block(9, b"A", 10)
    b.add_dead(4, DeadLetter("t", 1, 4, None, b"x", (), "message", "bad"))
    c.add_block(2, b"C1", 2)
    c.add_block(5, b"C2", 3)
    job = FlushJob((a, b, c))
    assert job.rows == 15 and job.messages == 16 and job.blocks == [b"A", b"C1", b"C2"]
    assert job.dedup_token() == "t:0:0-9:00000000;t:2:0-5:00000000"
    assert job.commit_offsets() == {TopicPartition("t", 0): 10, TopicPartition("t", 1): 5, TopicPartition("t", 2): 6}


def test_fate_from_watermarks() -> None:
    wm = Watermarks(stored=100, dead=50)
    assert fate(100, True, wm) is Fate.ALREADY_STORED and fate(101, True, wm) is Fate.STORE
    assert fate(50, False, wm) is Fate.ALREADY_DEAD and fate(51, False, wm) is Fate.DEAD
    assert fate(0, True, Watermarks()) is Fate.STORE and wm.below == 50


def test_partition_caught_up_and_lag() -> None:
    st = PartitionState(TopicPartition("t", 0), committed=5, fetched_to=5)
    assert not st.caught_up and st.lag is None
    st.highwater = 8
    assert not st.caught_up and st.lag == 3
    st.fetched_to = 8
    assert st.caught_up


def test_dlq_limit_trips_only_on_a_full_window_above_ratio() -> None:
    lim = DlqLimit(0.5, 10)
    for _ in range(9):
        lim.observe(True)  # window not full yet
    lim = DlqLimit(0.5, 10)
    for _ in range(5):
        lim.observe(False)
        lim.observe(True)  # exactly half: fine
    with pytest.raises(DlqLimitExceeded, match="6 of the last 10"):
        lim.observe(True)
    never = DlqLimit(1.0, 3)
    for _ in range(10):
        never.observe(True)


def test_backoff_is_capped_exponential_with_jitter() -> None:
    delays = [backoff_delay(a, base=0.1, cap=2.0) for a in range(12)]
    assert all(0.05 <= d <= 2.0 for d in delays)
    assert 0.05 <= delays[0] <= 0.1 and 1.0 <= delays[-1] <= 2.0
    assert len({round(backoff_delay(8, 0.1, 2.0), 6) for _ in range(20)}) > 1


def test_reason_class_removes_variable_parts() -> None:
    assert reason_class("not UTF-8 (invalid start byte at byte 12)") == "not UTF-8"
    assert reason_class("unknown action 'vm.x' for service/vm; valid: a, b") == "unknown action '…' for service/vm"
    assert reason_class("larger than 1048576 bytes (2097774)") == "larger than N bytes"


class RecordingStep:
    """A next step implementing only the ``Step`` protocol: records what it is given, one item in flight at a
    time (rejects the next until :meth:`finish`), and finishes everything on ``join``."""

    def __init__(self) -> None:
        self.received: list[FlushJob] = []
        self.in_flight: FlushJob | None = None
        self.rejected = 0

    def submit(self, item: FlushJob) -> None:
        if self.in_flight is not None:
            self.rejected += 1
            raise MessageRejected("busy")
        self.in_flight = item
        self.received.append(item)

    def finish(self) -> None:
        self.in_flight = None

    def poll(self) -> None:
        pass

    async def join(self, timeout: float) -> bool:
        self.finish()
        return True

    def close(self) -> None:
        self.in_flight = None

    def held(self) -> int:
        return self.in_flight.messages if self.in_flight is not None else 0


def _decoded(st: PartitionState, offset: int) -> Decoded:
    rec = Rec(b"{}", topic=st.tp.topic, partition=st.tp.partition, offset=offset)
    chunk = Chunk(st.tp.topic, st.tp.partition, [offset], [rec.value], datetime.now(UTC))
    return Decoded(st, [rec], [chunk], [DecodedChunk(b"block", 1, (), 0)])


def test_batching_feeds_any_step_through_the_protocol_and_respects_rejection() -> None:
    states = {tp: PartitionState(tp) for tp in (TopicPartition("t", 0), TopicPartition("t", 1))}
    st0, st1 = states.values()
    nxt = RecordingStep()
    step: Step[FlushJob] = nxt  # the protocol is all Batching needs of its next step
    counts: Counter[str] = Counter()
    batching = Batching(states, step, DlqLimit(1.0, 10), counts, max_rows=4, max_seconds=3600,
                        min_seconds=3600)

    batching.submit(_decoded(st0, 10))
    batching.poll()  # a quarter of max_rows is open: flushed
    assert [[(b.tp.partition, b.first, b.messages) for b in j.batches] for j in nxt.received] == [[(0, 10, 1)]]
    assert st0.open is None and batching.held() == 1

    batching.submit(_decoded(st0, 11))
    batching.submit(_decoded(st1, 5))
    batching.poll()  # rejected: nothing taken, the batches stay open and count as held
    batching.poll()
    assert len(nxt.received) == 1 and nxt.rejected == 2
    assert st0.open is not None and st1.open is not None and batching.held() == 3

    nxt.finish()
    batching.poll()  # accepted now: both open batches, oldest first, in one job
    assert len(nxt.received) == 2
    assert [(b.tp.partition, b.first) for b in nxt.received[1].batches] == [(0, 11), (1, 5)]
    assert st0.open is None and st1.open is None and batching.held() == 2

    batching.submit(_decoded(st1, 6))
    assert asyncio.run(batching.join(1.0))  # rejected first, then the next step's join makes room
    assert [(b.tp.partition, b.first) for b in nxt.received[2].batches] == [(1, 6)]
    assert batching.held() == 0
    assert counts == {"consumed": 4}  # its own counters: what it saw, nothing of the next step's
