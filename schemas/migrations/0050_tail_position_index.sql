-- The live tail (GET /v1/events/stream) asks once a second for the rows stored after a position: per Kafka
-- partition, the last offset it has seen. Rows are sorted by tenant and time, not by offset, so without an
-- index that question reads the provenance columns of the whole table. A minmax index on (partition, offset)
-- lets ClickHouse skip every granule whose offsets all lie at or below the position: in practice everything
-- but the newest parts. Parts written before this migration get it by the MATERIALIZE mutation (in the
-- background on a large table).
ALTER TABLE {db}.audit_events ADD INDEX IF NOT EXISTS idx_position (kafka_partition, kafka_offset) TYPE minmax GRANULARITY 1;
ALTER TABLE {db}.audit_events MATERIALIZE INDEX idx_position;
