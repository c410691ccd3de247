"""How a validated event becomes a row of ``audit_events`` and back: the one place for the column layout.

Contract: :data:`EVENT_COLUMNS` is the insert column order; :func:`event_row` returns a tuple in that order
(:func:`event_values` the same without the :data:`PROVENANCE_COLUMNS`)
with Python values clickhouse-connect inserts natively (UUID, aware datetime, str/None).
The read side's event shape (what the API selects and returns) is ``query_api/read/event_shape.py``; a test checks
that its stored columns are these.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.event import AuditEvent
from schemas.tables import EVENTS_TABLE as EVENTS_TABLE  # its name lives with the others

EVENT_COLUMNS: tuple[str, ...] = (
    "org_id",
    "occurred_at",
    "event_id",
    "schema_version",
    "workspace_id",
    "scope",
    "category",
    "action",
    "status",
    "actor_id",
    "actor_email",
    "actor_type",
    "actor_ip",
    "actor_user_agent",
    "target_type",
    "target_id",
    "target_name",
    "description",
    "detail",
    "source",
    "request_id",
    "received_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "publisher_via",
    "publisher_id",
)


#: the last columns of :data:`EVENT_COLUMNS`: where, when and from whom the consumer took the event (not the
#: event's content; the publisher comes from the credential that wrote it, :mod:`schemas.publisher`)
PROVENANCE_COLUMNS: tuple[str, ...] = ("received_at", "kafka_topic", "kafka_partition", "kafka_offset",
                                       "publisher_via", "publisher_id")
assert EVENT_COLUMNS[-len(PROVENANCE_COLUMNS) :] == PROVENANCE_COLUMNS


def event_values(ev: AuditEvent) -> tuple[Any, ...]:
    """The event's own columns: :data:`EVENT_COLUMNS` without :data:`PROVENANCE_COLUMNS`."""
    a, t = ev.actor, ev.target
    return (
        ev.org_id,
        ev.occurred_at,
        ev.event_id,
        ev.schema_version,
        ev.workspace_id,
        ev.scope,
        ev.category,
        ev.action,
        ev.status,
        a.id,
        a.email,
        a.type,
        a.ip,
        a.user_agent,
        t.type,
        t.id,
        t.name,
        ev.description or "",
        ev.detail_json(),
        ev.source,
        ev.request_id,
    )


def event_row(ev: AuditEvent, received_at: datetime, topic: str, partition: int, offset: int,
              publisher: tuple[str, str | None] = ("kafka", None)) -> tuple[Any, ...]:
    return (*event_values(ev), received_at, topic, partition, offset, *publisher)
