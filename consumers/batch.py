"""Per-partition batch buffer: the unit of insert, dead-lettering and commit.

Contract:
- a :class:`PartitionBatch` covers one *contiguous* range of offsets ``first..last`` of one partition; every
  message of the range is in exactly one of ``blocks`` (valid, to store: ``rows`` of them, as Native blocks from
  :meth:`consumers.decode.DecodeStep.decode_chunk`), ``dead`` (invalid, to dead-letter) or was skipped (already
  stored / dead-lettered before a crash: see the watermarks in :mod:`consumers.worker`);
- after its rows are stored and its dead letters acknowledged, the commit offset is ``last + 1``;
- :meth:`PartitionBatch.dedup_token` is ``"{topic}:{partition}:{first}-{last}:{crc32 of the range's bytes}"``:
  a retried insert of the batch (same blocks, same token) is dropped by ClickHouse (``insert_deduplication_token``;
  with several blocks, ClickHouse derives one token per block from it), while the same offsets of a *new* log
  (re-created topic, restarted memory broker) carry other bytes and another token. After a restart a range is
  re-formed with the same token only by chance (batch ends follow fetch boundaries, and so do its blocks): the
  worker's offset watermarks, not the token, are what recognise a redelivered range.
- :class:`BatchBuffer` holds at most one open batch per partition, never mixes partitions, and reports which
  batches are due (size or age).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from consumers.decode import DeadLetter


@dataclass(slots=True)
class PartitionBatch:
    tp: TopicPartition
    first: int
    last: int = -1
    blocks: list[bytes] = field(default_factory=list)
    rows: int = 0
    dead: list[DeadLetter] = field(default_factory=list)
    skipped: int = 0
    fingerprint: int = 0  # crc32 over the values of every message of the range, in offset order
    created: float = field(default_factory=time.monotonic)

    def add_block(self, last_offset: int, block: bytes, rows: int) -> None:
        """``rows`` valid messages up to ``last_offset``, encoded as one Native ``block``."""
        if rows:
            self.blocks.append(block)
            self.rows += rows
        self.last = max(self.last, last_offset)

    def add_dead(self, offset: int, dead: DeadLetter) -> None:
        self.dead.append(dead)
        self.last = offset

    def add_skipped(self, offset: int) -> None:
        self.skipped += 1
        self.last = offset

    @property
    def messages(self) -> int:
        return self.rows + len(self.dead) + self.skipped

    @property
    def commit_offset(self) -> int:
        return self.last + 1

    def dedup_token(self) -> str:
        return f"{self.tp.topic}:{self.tp.partition}:{self.first}-{self.last}:{self.fingerprint:08x}"


class BatchBuffer:
    """Open batches by partition."""

    def __init__(self) -> None:
        self._open: dict[TopicPartition, PartitionBatch] = {}

    def batch_for(self, tp: TopicPartition, offset: int) -> PartitionBatch:
        b = self._open.get(tp)
        if b is None:
            b = self._open[tp] = PartitionBatch(tp, first=offset)
        return b

    def due(self, max_rows: int, max_seconds: float, now: float | None = None) -> list[TopicPartition]:
        now = time.monotonic() if now is None else now
        return [
            tp for tp, b in self._open.items() if b.messages >= max_rows or now - b.created >= max_seconds
        ]

    def take(self, tp: TopicPartition) -> PartitionBatch | None:
        return self._open.pop(tp, None)

    def drop(self, tps: Iterable[TopicPartition]) -> int:
        """Forget open batches (partitions no longer owned); returns the messages dropped (not committed)."""
        n = 0
        for tp in list(tps):
            b = self._open.pop(tp, None)
            n += b.messages if b else 0
        return n

    def partitions(self) -> list[TopicPartition]:
        return list(self._open)

    @property
    def messages(self) -> int:
        return sum(b.messages for b in self._open.values())
