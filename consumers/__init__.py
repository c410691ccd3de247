"""The consumer-group worker: Kafka -> validate -> ClickHouse (valid) / DLQ topic (invalid) -> commit.

In the style of getsentry/arroyo: a processor owns the loop (:mod:`consumers.processor`) and pushes what it fetches
through a chain of steps (:mod:`consumers.steps`: decoding, batching, flushing, committing). The steps use, by role:
:mod:`consumers.decode` (bytes -> Native block or dead letter, in this process or helper processes),
:mod:`consumers.store` (the one inserter thread, the first-write guard), :mod:`consumers.kafka` (dead-letter topic,
whole-topic reads, watermark check), :mod:`consumers.batch` (per-partition ranges). :mod:`consumers.worker` builds
the chain and handles rebalances; :mod:`consumers.cli` runs workers.
"""
