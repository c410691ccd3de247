-- Autocomplete of actor e-mails (GET /v1/actors): one small row per (org, e-mail, workspace) instead of a scan of
-- all events. Kept up to date by a materialized view on every insert into audit_events; backfilled once from the
-- rows already stored. workspace_id '' stands for "no workspace" so the same tenant conditions
-- (org_id = ..., workspace_id IN ...) scope it exactly like audit_events.
-- email_key is the lower-cased e-mail: the sorting key makes a prefix lookup a primary-key range.
CREATE TABLE IF NOT EXISTS {db}.audit_actors
(
    org_id        String,
    email_key     String,
    actor_email   String,
    workspace_id  String,
    last_seen     SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    events        SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (org_id, email_key, actor_email, workspace_id)
TTL toDateTime(last_seen) + INTERVAL {ttl_days} DAY DELETE;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.audit_actors_mv TO {db}.audit_actors AS
SELECT org_id, lowerUTF8(assumeNotNull(actor_email)) AS email_key, assumeNotNull(actor_email) AS actor_email,
       ifNull(workspace_id, '') AS workspace_id, max(occurred_at) AS last_seen, count() AS events
FROM {db}.audit_events
WHERE actor_email IS NOT NULL
GROUP BY org_id, email_key, actor_email, workspace_id;

INSERT INTO {db}.audit_actors
SELECT org_id, lowerUTF8(assumeNotNull(actor_email)) AS email_key, assumeNotNull(actor_email) AS actor_email,
       ifNull(workspace_id, '') AS workspace_id, max(occurred_at) AS last_seen, count() AS events
FROM {db}.audit_events
WHERE actor_email IS NOT NULL
GROUP BY org_id, email_key, actor_email, workspace_id;
