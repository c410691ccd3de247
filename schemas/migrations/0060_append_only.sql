-- The record is append-only and attributable (docs/security.md, "The record"): the first stored version of
-- (org_id, event_id) is the record; a later message with other content is kept aside here, never in
-- audit_events. Every stored row carries its publisher, set by the consumer from the credential that wrote it
-- ('http' + the service token's sub, 'api' + 'query-api' for the self-audit, 'kafka' + NULL for the topic;
-- '' for rows stored before this migration).
ALTER TABLE {db}.audit_events ADD COLUMN IF NOT EXISTS publisher_via LowCardinality(String) DEFAULT '';
ALTER TABLE {db}.audit_events ADD COLUMN IF NOT EXISTS publisher_id Nullable(String);

-- The analysts' view (0031) with the publisher.
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
    e.kafka_offset AS kafka_offset,
    e.publisher_via AS publisher_via,
    e.publisher_id AS publisher_id
FROM {db}.audit_events AS e FINAL
LEFT JOIN
(
    SELECT scope, action, category_label, scope_label, action_label
    FROM {db}.catalog_actions FINAL
) AS c ON e.scope = c.scope AND e.action = c.action;

-- One row per message that reused a stored (org_id, event_id) with other content: the content it carried (the
-- row it would have been, as JSON keyed by column), its content hash, who published it and where it came from.
-- Keyed by its Kafka position: a retried flush records it once.
CREATE TABLE IF NOT EXISTS {db}.audit_event_conflicts
(
    org_id           String,
    event_id         UUID,
    occurred_at      DateTime64(3, 'UTC'),
    content_sha256   FixedString(32),
    content          String CODEC(ZSTD(3)),
    publisher_via    LowCardinality(String),
    publisher_id     Nullable(String),
    kafka_topic      LowCardinality(String),
    kafka_partition  UInt32,
    kafka_offset     UInt64,
    received_at      DateTime64(3, 'UTC'),
    recorded_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (org_id, event_id, kafka_topic, kafka_partition, kafka_offset)
TTL toDateTime(received_at) + INTERVAL {ttl_days} DAY DELETE;

-- Rows stored before this migration: where one (org_id, event_id) has rows with different content, the earliest
-- (received_at, then Kafka position) stays the record and every other version moves aside.
INSERT INTO {db}.audit_event_conflicts (org_id, event_id, occurred_at, content_sha256, content, publisher_via,
    publisher_id, kafka_topic, kafka_partition, kafka_offset, received_at)
SELECT e.org_id, e.event_id, e.occurred_at, e.h, e.content, '', NULL, e.kafka_topic, e.kafka_partition,
       e.kafka_offset, e.received_at
FROM (
    SELECT org_id, event_id, occurred_at, {content_sha256} AS h,
           formatRowNoNewline('JSONEachRow', {content_columns}) AS content,
           kafka_topic, kafka_partition, kafka_offset, received_at
    FROM {db}.audit_events
    WHERE (org_id, event_id) IN (SELECT org_id, event_id FROM {db}.audit_events GROUP BY org_id, event_id
                                 HAVING uniqExact({content_sha256}) > 1)
) AS e
INNER JOIN (
    SELECT org_id, event_id, argMin({content_sha256}, (received_at, kafka_topic, kafka_partition, kafka_offset)) AS first_h
    FROM {db}.audit_events
    WHERE (org_id, event_id) IN (SELECT org_id, event_id FROM {db}.audit_events GROUP BY org_id, event_id
                                 HAVING uniqExact({content_sha256}) > 1)
    GROUP BY org_id, event_id
) AS f ON e.org_id = f.org_id AND e.event_id = f.event_id
WHERE e.h != f.first_h;

ALTER TABLE {db}.audit_events DELETE WHERE (org_id, event_id, kafka_topic, kafka_partition, kafka_offset) IN
    (SELECT org_id, event_id, kafka_topic, kafka_partition, kafka_offset FROM {db}.audit_event_conflicts)
SETTINGS mutations_sync = 2;
