-- The consumer's stored-offset watermark: per (kafka_topic, kafka_partition) the highest Kafka offset whose
-- row reached audit_events. On partition assignment the consumer reads it (one tiny aggregated table, not a
-- scan of the events) and skips redelivered valid messages at or below it: a crash between INSERT and the
-- offset commit then stores nothing twice. Kept by a materialized view on every insert; no TTL (a watermark
-- must outlive the rows it covers). max() is idempotent, so a re-sent or deduplicated block cannot corrupt it.
CREATE TABLE IF NOT EXISTS {db}.audit_events_offsets
(
    kafka_topic      LowCardinality(String),
    kafka_partition  UInt32,
    max_offset       SimpleAggregateFunction(max, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (kafka_topic, kafka_partition);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.audit_events_offsets_mv TO {db}.audit_events_offsets AS
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM {db}.audit_events
GROUP BY kafka_topic, kafka_partition;

-- Rows stored before this migration (idempotent: max of a max).
INSERT INTO {db}.audit_events_offsets
SELECT kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM {db}.audit_events
GROUP BY kafka_topic, kafka_partition;
