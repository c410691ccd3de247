-- Daily counts per org / workspace / scope / category / action / status, kept up to date on insert by a
-- materialized view (SQL SECURITY DEFINER: the consumer's INSERT-only role needs no grant on the target).
-- It counts stored rows: a producer retry that re-sends an event_id in a later batch is counted twice here
-- until audit_events merges it away; for exact figures query audit_events_flat (see docs/analysts.md).
CREATE TABLE IF NOT EXISTS {db}.audit_daily_counts
(
    day           Date,
    org_id        String,
    workspace_id  String,
    scope         LowCardinality(String),
    category      LowCardinality(String),
    action        LowCardinality(String),
    status        Enum8('SUCCESS' = 1, 'FAILED' = 2),
    events        UInt64
)
ENGINE = SummingMergeTree(events)
PARTITION BY toYYYYMM(day)
ORDER BY (org_id, day, scope, category, action, status, workspace_id)
TTL day + INTERVAL {ttl_days} DAY DELETE;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.audit_daily_counts_mv
TO {db}.audit_daily_counts
SQL SECURITY DEFINER
AS SELECT
    toDate(occurred_at) AS day,
    org_id,
    ifNull(workspace_id, '') AS workspace_id,
    scope,
    category,
    action,
    status,
    count() AS events
FROM {db}.audit_events
GROUP BY day, org_id, workspace_id, scope, category, action, status;

-- Backfill what was stored before the view existed (an upgrade of a database that already holds events).
-- Runs once: migrations are claimed by one migrator (auditlog.store.migrate); rows received after the
-- view was created are counted by the view itself.
INSERT INTO {db}.audit_daily_counts
SELECT
    toDate(occurred_at) AS day,
    org_id,
    ifNull(workspace_id, '') AS workspace_id,
    scope,
    category,
    action,
    status,
    count() AS events
FROM {db}.audit_events FINAL
WHERE received_at < (
    SELECT toDateTime64(max(metadata_modification_time), 3, 'UTC')
    FROM system.tables
    WHERE database = '{db}' AND name = 'audit_daily_counts_mv'
)
GROUP BY day, org_id, workspace_id, scope, category, action, status;
