"""The columns of ``audit_events``: the one spec of the stored event, from which the other column lists follow.

Contract: :data:`COLUMNS` lists every column of ``audit_events`` in insert order (the event's own columns, then
the provenance the consumer adds), each with
- ``name`` and ``ch_type``: the column and its ClickHouse type as ``system.columns`` reports it (the DDL in
  ``schemas/migrations/`` without DEFAULT / CODEC);
- ``source``: where the value comes from: the attribute path in the validated event (``auditlogkit.schemas.event.AuditEvent``,
  e.g. ``actor.email``) and how it is stored (``encode``: as is; ``text``: NULL stored as ''; ``json``: compact
  JSON text); None: provenance, set by the consumer (``auditlogkit.schemas.rows.event_row``);
- ``public``: its path in the API's event (``auditlogkit.query_api.models.EventOut``, e.g. ``publisher.via``); None: not read;
- ``hashed_in``: the content-hash versions whose column list includes it. Each version's list is a FROZEN
  literal in ``auditlog/db/content_hash.py``; this only records it (a test checks the two agree). A new column
  is in no version: the hash of a stored event never changes.

Derived from it: ``auditlogkit.schemas.rows`` (``EVENT_COLUMNS``, ``PROVENANCE_COLUMNS``, the row encoder ``event_values``) and
the stored fields of ``auditlogkit.query_api.read.event_shape.EVENT_SHAPE`` (column, type, path). Checked against it by tests:
the DDL (``tests/unit/test_event_shape.py`` parses the migrations; ``tests/integration/test_columns.py`` migrates a
fresh store and reads ``system.columns``), ``AuditEvent``'s fields, ``EventOut``'s fields and the hash literals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encode = Literal["", "text", "json"]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of ``audit_events`` (see the module's contract)."""

    name: str
    ch_type: str
    source: str | None = None
    encode: Encode = ""
    public: str | None = None
    hashed_in: tuple[int, ...] = ()

    @property
    def provenance(self) -> bool:
        """Set by the consumer, not taken from the event."""
        return self.source is None


_V1 = (1,)  # content hash version 1 (auditlog/db/content_hash.py CONTENT_COLUMNS_V1)

COLUMNS: tuple[Column, ...] = (
    # the event's own columns (EVENT.md): from the event, in the API's event, in the content hash v1
    Column("org_id", "String", "org_id", public="org_id", hashed_in=_V1),
    Column("occurred_at", "DateTime64(3, 'UTC')", "occurred_at", public="occurred_at", hashed_in=_V1),
    Column("event_id", "UUID", "event_id", public="event_id", hashed_in=_V1),
    Column("schema_version", "UInt8", "schema_version", public="schema_version", hashed_in=_V1),
    Column("workspace_id", "Nullable(String)", "workspace_id", public="workspace_id", hashed_in=_V1),
    Column("scope", "LowCardinality(String)", "scope", public="scope", hashed_in=_V1),
    Column("category", "LowCardinality(String)", "category", public="category", hashed_in=_V1),
    Column("action", "LowCardinality(String)", "action", public="action", hashed_in=_V1),
    Column("status", "Enum8('SUCCESS' = 1, 'FAILED' = 2)", "status", public="status", hashed_in=_V1),
    Column("actor_id", "String", "actor.id", public="actor.id", hashed_in=_V1),
    Column("actor_email", "Nullable(String)", "actor.email", public="actor.email", hashed_in=_V1),
    Column("actor_type", "Enum8('user' = 1, 'service' = 2, 'system' = 3)", "actor.type", public="actor.type",
           hashed_in=_V1),
    Column("actor_ip", "Nullable(String)", "actor.ip", public="actor.ip", hashed_in=_V1),
    Column("actor_user_agent", "Nullable(String)", "actor.user_agent", public="actor.user_agent", hashed_in=_V1),
    Column("target_type", "LowCardinality(Nullable(String))", "target.type", public="target.type", hashed_in=_V1),
    Column("target_id", "Nullable(String)", "target.id", public="target.id", hashed_in=_V1),
    Column("target_name", "Nullable(String)", "target.name", public="target.name", hashed_in=_V1),
    Column("description", "String", "description", "text", public="description", hashed_in=_V1),
    Column("detail", "Nullable(String)", "detail", "json", public="detail", hashed_in=_V1),
    Column("source", "LowCardinality(Nullable(String))", "source", public="source", hashed_in=_V1),
    Column("request_id", "Nullable(String)", "request_id", public="request_id", hashed_in=_V1),
    # provenance: set by the consumer (auditlogkit.schemas.rows.event_row), never part of the content hash
    Column("received_at", "DateTime64(3, 'UTC')", public="received_at"),
    Column("kafka_topic", "LowCardinality(String)"),
    Column("kafka_partition", "UInt32"),
    Column("kafka_offset", "UInt64"),
    Column("publisher_via", "LowCardinality(String)", public="publisher.via"),
    Column("publisher_id", "Nullable(String)", public="publisher.id"),
)

#: column name -> its spec
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
assert len(BY_NAME) == len(COLUMNS), "column names must be unique"
