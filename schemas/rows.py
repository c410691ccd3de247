"""How a validated event becomes a row of ``audit_events`` and back: the one place for the column layout.

Contract: :data:`EVENT_COLUMNS` is the insert column order; :func:`event_row` returns a tuple in that order
(:func:`event_values` the same without the :data:`PROVENANCE_COLUMNS`)
with Python values clickhouse-connect inserts natively (UUID, aware datetime, str/None).
:func:`row_to_public` turns a selected row (dict keyed by column name) into the API's event shape.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from schemas.catalog import Catalog
from schemas.event import AuditEvent, format_ts

EVENTS_TABLE = "audit_events"

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
)


#: the last columns of :data:`EVENT_COLUMNS`: where and when the consumer took the event (not the event's content)
PROVENANCE_COLUMNS: tuple[str, ...] = ("received_at", "kafka_topic", "kafka_partition", "kafka_offset")
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


def event_row(ev: AuditEvent, received_at: datetime, topic: str, partition: int, offset: int) -> tuple[Any, ...]:
    return (*event_values(ev), received_at, topic, partition, offset)


def row_to_public(row: dict[str, Any], catalog: Catalog, with_detail: bool = True) -> dict[str, Any]:
    """A stored row as the API's event object (EVENT.md fields + received_at + labels)."""
    labels = catalog.labels(row["scope"], row["action"])
    scope_label, category_label, action_label = labels or (row["scope"], row["category"], row["action"])
    out: dict[str, Any] = {
        "schema_version": row.get("schema_version", 1),
        "event_id": str(row["event_id"]),
        "occurred_at": format_ts(row["occurred_at"]),
        "org_id": row["org_id"],
        "workspace_id": row.get("workspace_id"),
        "scope": row["scope"],
        "scope_label": scope_label,
        "category": row["category"],
        "category_label": category_label,
        "action": row["action"],
        "action_label": action_label,
        "status": row["status"],
        "actor": {
            "id": row["actor_id"],
            "email": row.get("actor_email"),
            "type": row["actor_type"],
            "ip": row.get("actor_ip"),
            "user_agent": row.get("actor_user_agent"),
        },
        "target": {"type": row.get("target_type"), "id": row.get("target_id"), "name": row.get("target_name")},
        "description": row["description"],
        "source": row.get("source"),
        "request_id": row.get("request_id"),
        "received_at": format_ts(row["received_at"]),
    }
    if with_detail:
        raw = row.get("detail")
        out["detail"] = json.loads(raw) if raw else None
    return out
