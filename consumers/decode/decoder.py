"""The decoder: Kafka messages -> rows of ``audit_events`` or dead letters (used by the decoding step).

Contract: :class:`Decoder` never raises for bad input. Every message becomes exactly one of
- a row in :data:`auditlogkit.schemas.rows.EVENT_COLUMNS` order (the event passed :func:`auditlogkit.schemas.event.parse_event`),
- a dead letter naming the broken ``field`` and ``reason`` (non-UTF-8, not JSON, > 1 MiB, unknown field,
  wrong type, unknown catalog code, future timestamp, null value, ...), sent as a :class:`DeadLetter`.
Validation is :func:`parse_event` itself: the consumer has no second copy of the contract.

:meth:`Decoder.decode_chunk` is the consumer's hot path: it decodes a :class:`Chunk` (consecutive messages of
one partition) in one call and returns a :class:`DecodedChunk`: the rows to store already encoded as one Native
block (:class:`~auditlogkit.consumers.decode.native.NativeEncoder`) plus the index, field and reason of each message to dead-letter.
Both are plain data, so the call can run in another process (:mod:`auditlogkit.consumers.decode.pool`).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zlib import crc32

from auditlogkit.consumers.decode.native import NativeEncoder
from auditlogkit.consumers.fate import Fate, Watermarks, fate
from auditlogkit.consumers.store.first_write import fingerprint
from auditlogkit.schemas.catalog import RESERVED, RESERVED_REASON, Catalog, get_catalog
from auditlogkit.schemas.event import EventError, epoch_ms, parse_event
from auditlogkit.schemas.rows import event_values
from auditlogkit.server.provenance import API, KAFKA, Publisher


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """An invalid message and why. ``value``/``key``/``headers`` are the original record's, untouched."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    field: str
    reason: str


@dataclass(slots=True, frozen=True)
class Chunk:
    """Consecutive messages of one partition to decode in one call, with the partition's watermarks
    (:mod:`auditlogkit.consumers.fate`): what lies at or below them was handled before and is only counted."""

    topic: str
    partition: int
    offsets: Sequence[int]
    values: Sequence[bytes | None]
    received_at: datetime
    stored_up_to: int = -1
    dead_up_to: int = -1
    publishers: Sequence[Publisher] | None = None  # per message, verified (auditlogkit.server.provenance); None: all KAFKA


@dataclass(slots=True, frozen=True)
class DecodedChunk:
    block: bytes  # Native block of the messages to store (b"" if none)
    rows: int
    invalid: tuple[tuple[int, str, str], ...]  # messages to dead-letter: (index into the chunk, field, reason)
    already_stored: int
    already_dead: int = 0
    fingerprint: int = 0  # crc32 over the chunk's values, in offset order
    keys: bytes = b""  # auditlogkit.consumers.store.first_write.fingerprint of each stored row, in row order (array 'Q')


@dataclass(slots=True)
class _Walk:
    """What one pass over a chunk found (:meth:`Decoder._walk`)."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    vias: list[str] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    keys: array[int] = field(default_factory=lambda: array("Q"))
    invalid: list[tuple[int, str, str]] = field(default_factory=list)
    already_stored: int = 0
    already_dead: int = 0
    fp: int = 0


class Decoder:
    """Validate records against the v1 contract and the catalog."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog or get_catalog()

    def decode_chunk(self, chunk: Chunk, encoder: NativeEncoder) -> DecodedChunk:
        """Every message of ``chunk`` gets its :func:`~auditlogkit.consumers.fate.fate`; only STORE rows are encoded and
        only DEAD messages are reported."""
        w = self._walk(chunk)
        n = len(w.rows)
        at = epoch_ms(chunk.received_at)  # the provenance columns, column by column (constant but the offset)
        block = encoder.encode(w.rows, ([at] * n, [chunk.topic] * n, [chunk.partition] * n, w.offsets, w.vias, w.ids))
        return DecodedChunk(block, n, tuple(w.invalid), w.already_stored, w.already_dead, w.fp, w.keys.tobytes())

    def stored_rows(self, chunk: Chunk) -> list[tuple[Any, ...]]:
        """The whole rows (:data:`~auditlogkit.schemas.rows.EVENT_COLUMNS`) that :meth:`decode_chunk` encodes, in order."""
        w = self._walk(chunk)
        at = epoch_ms(chunk.received_at)
        return [(*r, at, chunk.topic, chunk.partition, o, v, i)
                for r, o, v, i in zip(w.rows, w.offsets, w.vias, w.ids, strict=True)]

    def _walk(self, chunk: Chunk) -> _Walk:
        """The hot loop: per message only what differs between messages (locals, no per-row publisher when the
        chunk has none: the publisher columns are filled once at the end)."""
        w = _Walk()
        wm = Watermarks(chunk.stored_up_to, chunk.dead_up_to)
        values = self._values
        publishers = chunk.publishers
        rows, offsets, keys, invalid, vias, ids = w.rows, w.offsets, w.keys, w.invalid, w.vias, w.ids
        store, dead, stored_before = Fate.STORE, Fate.DEAD, Fate.ALREADY_STORED
        reserved_scope, reserved_category = RESERVED
        fp = 0
        for i, (offset, value) in enumerate(zip(chunk.offsets, chunk.values, strict=True)):
            fp = crc32(value or b"", fp)
            out = values(value)
            good = type(out) is not list
            if good and out[6] == reserved_category and out[5] == reserved_scope and (  # is_reserved, inlined
                    publishers is None or publishers[i] != API):
                out, good = ["category", RESERVED_REASON], False
            what = fate(offset, good, wm)
            if what is store:
                rows.append(out)  # type: ignore[arg-type]
                offsets.append(offset)
                keys.append(fingerprint(out[0], out[2]))  # type: ignore[arg-type]
                if publishers is not None:
                    vias.append(publishers[i][0])
                    ids.append(publishers[i][1])
            elif what is dead:
                invalid.append((i, out[0], out[1]))
            elif what is stored_before:
                w.already_stored += 1
            else:
                w.already_dead += 1
        if publishers is None:  # every row is KAFKA's
            w.vias, w.ids = [KAFKA[0]] * len(rows), [KAFKA[1]] * len(rows)
        w.fp = fp
        return w

    def _values(self, value: bytes | None) -> tuple[Any, ...] | list[str]:
        """The event's own columns of a valid message, else ``[field, reason]``."""
        try:
            if value is None:
                raise EventError("message", "empty message (null value)")
            return event_values(parse_event(value, self.catalog))
        except EventError as exc:
            return [exc.field, exc.reason]
        except Exception as exc:  # a validator bug must not kill the worker or lose the message
            return ["message", f"unexpected validation error ({type(exc).__name__}: {exc})"]


def dead_letter(record: Any, field: str, reason: str) -> DeadLetter:
    """The :class:`DeadLetter` of an aiokafka ``ConsumerRecord``."""
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers or ()),
        field=field,
        reason=reason,
    )


def validates(value: bytes | None, catalog: Catalog) -> bool:
    """Whether a record with this value would be stored now (not dead-lettered) by :class:`Decoder`."""
    if value is None:
        return False
    try:
        parse_event(value, catalog)
    except Exception:  # EventError, or a validator bug: decode dead-letters both
        return False
    return True
