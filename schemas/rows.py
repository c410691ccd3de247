"""How a validated event becomes a row of ``audit_events``: the column layout, derived from ``schemas/columns.py``.

Contract: :data:`EVENT_COLUMNS` is the insert column order (:data:`auditlogkit.schemas.columns.COLUMNS`' names);
:func:`event_row` returns a tuple in that order (:func:`event_values` the same without the
:data:`PROVENANCE_COLUMNS`, each value taken from the event where the spec's ``source`` says and stored as its
``encode`` says) with Python values clickhouse-connect inserts natively (UUID, aware datetime, str/None).
The read side's event shape (what the API selects and returns) is ``query_api/read/event_shape.py``; its stored
fields follow from the same spec.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from operator import attrgetter
from typing import Any

from auditlogkit.schemas.columns import COLUMNS, Column
from auditlogkit.schemas.event import AuditEvent, _dumps
from auditlogkit.schemas.tables import EVENTS_TABLE as EVENTS_TABLE  # its name lives with the others

EVENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS)

#: the last columns of :data:`EVENT_COLUMNS`: where, when and from whom the consumer took the event (not the
#: event's content; the publisher comes from the credential that wrote it, :mod:`schemas.publisher`)
PROVENANCE_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.provenance)
assert EVENT_COLUMNS[-len(PROVENANCE_COLUMNS) :] == PROVENANCE_COLUMNS, "the event's own columns come first"
assert PROVENANCE_COLUMNS == ("received_at", "kafka_topic", "kafka_partition", "kafka_offset", "publisher_via",
                              "publisher_id"), "event_row() fills these, in this order"

_OWN: tuple[Column, ...] = tuple(c for c in COLUMNS if not c.provenance)


def _text(v: str | None) -> str:
    return "" if v is None else v


def _json(v: Any) -> str | None:
    """Compact JSON text, key order kept (what ``AuditEvent.detail_json`` returns)."""
    return None if v is None else _dumps(v).decode()


_ENCODERS: dict[str, Callable[[Any], Any]] = {"text": _text, "json": _json}
_GET = attrgetter(*(c.source or "" for c in _OWN))  # one call for every value (a tuple: more than one column)
_ENCODE: tuple[tuple[int, Callable[[Any], Any]], ...] = tuple(
    (i, _ENCODERS[c.encode]) for i, c in enumerate(_OWN) if c.encode)


def event_values(ev: AuditEvent) -> tuple[Any, ...]:
    """The event's own columns: :data:`EVENT_COLUMNS` without :data:`PROVENANCE_COLUMNS`."""
    values = list(_GET(ev))
    for i, encode in _ENCODE:
        values[i] = encode(values[i])
    return tuple(values)


def event_row(ev: AuditEvent, received_at: datetime, topic: str, partition: int, offset: int,
              publisher: tuple[str, str | None] = ("kafka", None)) -> tuple[Any, ...]:
    return (*event_values(ev), received_at, topic, partition, offset, *publisher)
