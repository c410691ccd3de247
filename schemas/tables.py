"""The names of our database objects: the one place the code takes them from.

The DDL in ``schemas/migrations/`` creates them (the migration is named beside each); the two bookkeeping tables of
the migrator itself are created by ``auditlog/db/migrations.py``. ``tests/unit/test_tables.py`` checks each name
against the DDL.
"""

from __future__ import annotations

#: The events (0001), one row per stored event; the layout is ``schemas/rows.py``.
EVENTS_TABLE = "audit_events"
#: The consumer's per-partition stored-offset watermarks (0010), written by a materialized view.
OFFSETS_TABLE = "audit_events_offsets"
#: Actor e-mails per org for autocomplete (0020), written by a materialized view.
ACTORS_TABLE = "audit_actors"
#: The catalog's labels (0030), synced from ``schemas/catalog.json`` by the migrator.
CATALOG_TABLE = "catalog_actions"
#: Events joined with their catalog labels (0031), a view.
FLAT_VIEW = "audit_events_flat"
#: Event counts per org, workspace, action, status and day (0032), written by a materialized view.
DAILY_COUNTS = "audit_daily_counts"
#: The content digest of each stored event (0040), written by a materialized view; append-only.
DIGESTS_TABLE = "audit_event_digests"
#: Messages that reused a stored (org_id, event_id) with other content (0060): kept aside, never the record.
CONFLICTS_TABLE = "audit_event_conflicts"
#: Log streams (0070): each stream's configuration (secrets sealed), written by the API.
STREAMS_TABLE = "audit_streams"
#: Log streams (0070): where each stream's delivery stands, written by the deliverer holding its lease.
STREAM_POSITIONS_TABLE = "audit_stream_positions"
#: Log streams (0070): the deliverers' leases on streams and their roll-call.
STREAM_LEASES_TABLE = "audit_stream_leases"
#: The migrator's record of applied versions (created by ``auditlog/db/migrations.py``).
MIGRATIONS_TABLE = "schema_migrations"
#: The migrator's claims on versions being applied (created by ``auditlog/db/migrations.py``).
CLAIMS_TABLE = "schema_migration_claims"

#: The objects the migrations in ``schemas/migrations/`` create.
MIGRATED_OBJECTS: tuple[str, ...] = (EVENTS_TABLE, OFFSETS_TABLE, ACTORS_TABLE, CATALOG_TABLE, FLAT_VIEW,
                                     DAILY_COUNTS, DIGESTS_TABLE, CONFLICTS_TABLE, STREAMS_TABLE,
                                     STREAM_POSITIONS_TABLE, STREAM_LEASES_TABLE)
