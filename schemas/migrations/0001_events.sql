-- The events table: one row per accepted audit event (EVENT.md) plus received_at and Kafka provenance.
-- Sorting key starts with the tenant and time (every page query is "one org, a time range, newest first");
-- event_id last makes the key unique per event, so ReplacingMergeTree collapses a re-sent event_id
-- (a producer retry carries the same org_id/occurred_at/event_id) and FINAL reads see it once.
-- non_replicated_deduplication_window makes insert_deduplication_token effective on plain MergeTree
-- (measured: without it the token does nothing).
CREATE TABLE IF NOT EXISTS {db}.audit_events
(
    org_id            String,
    occurred_at       DateTime64(3, 'UTC'),
    event_id          UUID,
    schema_version    UInt8 DEFAULT 1,
    workspace_id      Nullable(String),
    scope             LowCardinality(String),
    category          LowCardinality(String),
    action            LowCardinality(String),
    status            Enum8('SUCCESS' = 1, 'FAILED' = 2),
    actor_id          String,
    actor_email       Nullable(String),
    actor_type        Enum8('user' = 1, 'service' = 2, 'system' = 3),
    actor_ip          Nullable(String),
    actor_user_agent  Nullable(String),
    target_type       LowCardinality(Nullable(String)),
    target_id         Nullable(String),
    target_name       Nullable(String),
    description       String,
    detail            Nullable(String) CODEC(ZSTD(3)),
    source            LowCardinality(Nullable(String)),
    request_id        Nullable(String),
    received_at       DateTime64(3, 'UTC'),
    kafka_topic       LowCardinality(String),
    kafka_partition   UInt32,
    kafka_offset      UInt64,
    INDEX idx_actor_email actor_email TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_actor_ip actor_ip TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_target_id target_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 4,
    INDEX idx_search lowerUTF8(concat(ifNull(actor_email, ''), ' ', ifNull(target_id, ''), ' ', ifNull(target_name, ''), ' ', description))
        TYPE ngrambf_v1(3, 65536, 3, 0) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (org_id, occurred_at, event_id)
TTL toDateTime(occurred_at) + INTERVAL {ttl_days} DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192;
