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
-- Runs once: each migration is claimed by one migrator (auditlog.store.migrate). A batch inserted by a
-- running consumer between the view's creation and this statement would be counted twice: run migrate
-- before the consumers start (deploy/compose.yaml does; `auditlog up` migrates before consuming).
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
GROUP BY day, org_id, workspace_id, scope, category, action, status;
