-- The analysts' table: every event once (FINAL collapses a re-sent event_id), flattened, with the catalog
-- labels joined in. SQL SECURITY INVOKER: the reader's own grants and row policies apply to audit_events
-- (an analyst restricted to one org sees only that org through the view too). Unmatched labels fall back
-- to the code (join_use_nulls = 0 gives '' for a missing label).
CREATE OR REPLACE VIEW {db}.audit_events_flat
SQL SECURITY INVOKER
AS SELECT
    e.org_id AS org_id,
    e.occurred_at AS occurred_at,
    e.event_id AS event_id,
    e.schema_version AS schema_version,
    e.workspace_id AS workspace_id,
    e.scope AS scope,
    e.category AS category,
    e.action AS action,
    if(c.scope_label = '', e.scope, c.scope_label) AS scope_label,
    if(c.category_label = '', e.category, c.category_label) AS category_label,
    if(c.action_label = '', e.action, c.action_label) AS action_label,
    e.status AS status,
    e.actor_id AS actor_id,
    e.actor_email AS actor_email,
    e.actor_type AS actor_type,
    e.actor_ip AS actor_ip,
    e.actor_user_agent AS actor_user_agent,
    e.target_type AS target_type,
    e.target_id AS target_id,
    e.target_name AS target_name,
    e.description AS description,
    e.detail AS detail,
    e.source AS source,
    e.request_id AS request_id,
    e.received_at AS received_at,
    e.kafka_topic AS kafka_topic,
    e.kafka_partition AS kafka_partition,
    e.kafka_offset AS kafka_offset
FROM {db}.audit_events AS e FINAL
LEFT JOIN
(
    SELECT scope, action, category_label, scope_label, action_label
    FROM {db}.catalog_actions FINAL
) AS c ON e.scope = c.scope AND e.action = c.action;
