"""The consumer-group worker: Kafka -> validate -> ClickHouse (valid) / DLQ topic (invalid) -> commit.

Processing steps (each a small class with a stated contract, in the style of getsentry/arroyo):
:mod:`consumers.decode` (bytes -> row or dead letter), :mod:`consumers.batch` (per-partition ranges),
:mod:`consumers.dlq` (dead-letter sender, rate guard, DLQ watermark), :mod:`consumers.inserter`
(the one store thread), :mod:`consumers.worker` (orchestration, rebalances, commits last).
"""
