"""Decode/validate step: one Kafka record -> a row of ``audit_events`` or a :class:`DeadLetter`.

Contract: :meth:`DecodeStep.decode` never raises for bad input. Every record becomes exactly one of
- a row tuple in :data:`schemas.rows.EVENT_COLUMNS` order (the event passed :func:`schemas.event.parse_event`),
- a :class:`DeadLetter` naming the broken ``field`` and ``reason`` (non-UTF-8, not JSON, > 1 MiB, unknown field,
  wrong type, unknown catalog code, future timestamp, null value, ...).
Validation is :func:`parse_event` itself: the consumer has no second copy of the contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.catalog import Catalog, get_catalog
from schemas.event import EventError, parse_event
from schemas.rows import event_row


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


class DecodeStep:
    """Validate records against the v1 contract and the catalog."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog or get_catalog()

    def decode(self, record: Any, received_at: datetime) -> tuple[Any, ...] | DeadLetter:
        """``record`` is an aiokafka ``ConsumerRecord`` (topic, partition, offset, key, value, headers)."""
        value = record.value
        try:
            if value is None:
                raise EventError("message", "empty message (null value)")
            ev = parse_event(value, self.catalog)
            return event_row(ev, received_at, record.topic, record.partition, record.offset)
        except EventError as exc:
            return self._dead(record, exc.field, exc.reason)
        except Exception as exc:  # a validator bug must not kill the worker or lose the message
            return self._dead(record, "message", f"unexpected validation error ({type(exc).__name__}: {exc})")

    @staticmethod
    def _dead(record: Any, field: str, reason: str) -> DeadLetter:
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
    """Whether a record with this value would be stored now (not dead-lettered) by :meth:`DecodeStep.decode`."""
    if value is None:
        return False
    try:
        parse_event(value, catalog)
    except Exception:  # EventError, or a validator bug: decode dead-letters both
        return False
    return True
