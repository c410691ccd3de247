"""Batches: the unit of insert, dead-lettering and commit.

Contract:
- a :class:`PartitionBatch` covers one *contiguous* range of offsets ``first..last`` of one partition; every
  message of the range is in exactly one of ``blocks`` (to store: ``rows`` of them, as Native blocks from
  :meth:`auditlogkit.consumers.decode.decoder.Decoder.decode_chunk`), ``dead`` (to dead-letter) or ``skipped`` (handled before
  a crash or rebalance, see :mod:`auditlogkit.consumers.fate`); once its rows are stored and its dead letters acknowledged,
  its partition may commit ``last + 1``;
- :meth:`PartitionBatch.dedup_token` is ``"{topic}:{partition}:{first}-{last}:{crc32 of the range's bytes}"``;
  a :class:`FlushJob` (the batches of several partitions, written by ONE insert) joins its batches' tokens. A
  retried insert of the job (same blocks, same token) is dropped by ClickHouse, while the same offsets of a
  *new* log (re-created topic, restarted memory broker) carry other bytes and so another token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from zlib import crc32

from aiokafka import TopicPartition

from auditlogkit.consumers.decode.decoder import Chunk, DeadLetter, DecodedChunk


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
    sources: list[Chunk] = field(default_factory=list)  # the chunk of each block (first-write checks decode again)
    keys: list[bytes] = field(default_factory=list)  # the rows' fingerprints of each block (DecodedChunk.keys)

    def add_block(self, last_offset: int, block: bytes, rows: int) -> None:
        """``rows`` messages to store up to ``last_offset``, encoded as one Native ``block``."""
        if rows:
            self.blocks.append(block)
            self.rows += rows
        self.last = max(self.last, last_offset)

    def add_decoded(self, chunk: Chunk, res: DecodedChunk) -> None:
        """The stored rows of one decoded chunk: its block, the chunk it came from and its fingerprints."""
        self.add_block(chunk.offsets[-1], res.block, res.rows)
        if res.rows:
            self.sources.append(chunk)
            self.keys.append(res.keys)

    def add_dead(self, offset: int, dead: DeadLetter) -> None:
        self.dead.append(dead)
        self.last = max(self.last, offset)

    def add_skipped(self, offset: int, n: int = 1) -> None:
        self.skipped += n
        self.last = max(self.last, offset)

    def add_fingerprint(self, chunk_crc: int) -> None:
        self.fingerprint = crc32(chunk_crc.to_bytes(4, "big"), self.fingerprint)

    @property
    def messages(self) -> int:
        return self.rows + len(self.dead) + self.skipped

    @property
    def commit_offset(self) -> int:
        return self.last + 1

    def dedup_token(self) -> str:
        return f"{self.tp.topic}:{self.tp.partition}:{self.first}-{self.last}:{self.fingerprint:08x}"

    def age(self, now: float) -> float:
        return now - self.created


@dataclass(slots=True, frozen=True)
class FlushJob:
    """Batches of distinct partitions, flushed together: dead letters first, then one insert, then commit."""

    batches: tuple[PartitionBatch, ...]

    @property
    def rows(self) -> int:
        return sum(b.rows for b in self.batches)

    @property
    def messages(self) -> int:
        return sum(b.messages for b in self.batches)

    @property
    def blocks(self) -> list[bytes]:
        return [blk for b in self.batches for blk in b.blocks]

    def dedup_token(self) -> str:
        return ";".join(b.dedup_token() for b in self.batches if b.rows)

    def commit_offsets(self) -> dict[TopicPartition, int]:
        return {b.tp: b.commit_offset for b in self.batches}
