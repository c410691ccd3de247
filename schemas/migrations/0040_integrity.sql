-- Tamper evidence (docs/operations.md, "Tamper evidence"; auditlog/integrity.py): one digest row per row ever
-- inserted into audit_events, written by a materialized view inside the same INSERT. content_sha256 is
-- SHA-256 over the event's content columns ({content_sha256} is auditlog.integrity.CONTENT_SHA256_SQL, the one
-- definition `auditlog verify` uses too). Append-only: nothing updates or deletes it but the retention TTL (the
-- same as audit_events'); no auditlog role may alter it. non_replicated_deduplication_window: a batch re-sent
-- with the same insert_deduplication_token (consumer retry) adds no second digest (measured: without it the
-- view writes the digests again although audit_events drops the block; identical extras would be harmless).
CREATE TABLE IF NOT EXISTS {db}.audit_event_digests
(
    org_id           String,
    event_id         UUID,
    occurred_at      DateTime64(3, 'UTC'),
    content_sha256   FixedString(32),
    kafka_topic      LowCardinality(String),
    kafka_partition  UInt32,
    kafka_offset     UInt64,
    recorded_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (org_id, event_id)
TTL toDateTime(occurred_at) + INTERVAL {ttl_days} DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.audit_event_digests_mv TO {db}.audit_event_digests
SQL SECURITY DEFINER
AS SELECT
    org_id,
    event_id,
    occurred_at,
    {content_sha256} AS content_sha256,
    kafka_topic,
    kafka_partition,
    kafka_offset
FROM {db}.audit_events;

-- Rows stored before this migration: one digest per stored row (run migrate before the consumers start; a
-- batch inserted in between gets an identical second digest, which verification ignores).
INSERT INTO {db}.audit_event_digests (org_id, event_id, occurred_at, content_sha256, kafka_topic, kafka_partition, kafka_offset)
SELECT org_id, event_id, occurred_at, {content_sha256} AS content_sha256, kafka_topic, kafka_partition, kafka_offset
FROM {db}.audit_events;
