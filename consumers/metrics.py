"""Prometheus metrics of the consumer (default ``REGISTRY``: the API's ``/metrics`` in the same process and
``auditlog consume``'s own server expose them). Defined once per process; workers share them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONSUMED = Counter("auditlog_consumer_messages_consumed", "Kafka messages taken by the consumer.", ["topic"])
STORED = Counter("auditlog_consumer_events_stored", "Valid events inserted into ClickHouse.", ["topic"])
DEAD_LETTERED = Counter(
    "auditlog_consumer_messages_dead_lettered",
    "Invalid messages sent to the DLQ, by the broken field (reason class).",
    ["topic", "field"],
)
SKIPPED = Counter(
    "auditlog_consumer_messages_skipped",
    "Redelivered messages already stored or dead-lettered before a crash (watermarks).",
    ["topic", "kind"],
)
CONFLICTS = Counter("auditlog_consumer_conflicts", "Messages that reused a stored (org_id, event_id) with other "
                    "content: kept aside in audit_event_conflicts, never stored as the event.", ["topic"])
RETRIES_DROPPED = Counter("auditlog_consumer_retries_dropped", "Messages identical to a stored event (a producer "
                          "retry): stored nothing.", ["topic"])
RETRIES = Counter("auditlog_consumer_retries", "Failed store/DLQ attempts that were retried.", ["step"])
COMMITS = Counter("auditlog_consumer_commits", "Offset commits.", ["result"])
BATCH_ROWS = Histogram(
    "auditlog_consumer_batch_messages",
    "Messages per flushed partition range.",
    buckets=(1, 10, 100, 500, 1000, 5000, 10_000, 25_000, 50_000, 100_000),
)
FLUSH_SECONDS = Histogram(
    "auditlog_consumer_flush_seconds",
    "Time to dead-letter + insert one partition range.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DECODE_SECONDS = Histogram(
    "auditlog_consumer_decode_seconds",
    "Time to validate and encode one fetch (getmany) of records, in the worker or its decode helpers.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
DECODE_HELPERS = Gauge("auditlog_consumer_decode_helpers", "Decode helper processes of the worker.", ["worker"])
LAG = Gauge("auditlog_consumer_lag", "High watermark minus committed offset.", ["topic", "partition"])
LAST_COMMIT_AGE = Gauge("auditlog_consumer_last_commit_age_seconds", "Seconds since the last commit.", ["worker"])
INFLIGHT = Gauge("auditlog_consumer_inflight_messages", "Buffered + flushing + decoding messages.", ["worker"])
PAUSED = Gauge("auditlog_consumer_paused", "1 while fetching is paused (backpressure).", ["worker"])
