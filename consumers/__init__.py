"""The consumer-group worker: Kafka -> validate -> ClickHouse (valid) / DLQ topic (invalid) -> commit.

In the style of getsentry/arroyo: a processor owns the loop (:mod:`auditlogkit.consumers.processor`) and pushes what it fetches
through a chain of steps (:mod:`auditlogkit.consumers.steps`: decoding, batching, flushing, committing). The steps use, by role:
:mod:`auditlogkit.consumers.decode` (bytes -> Native block or dead letter, in this process or helper processes),
:mod:`auditlogkit.consumers.store` (the one inserter thread, the first-write guard), :mod:`auditlogkit.consumers.kafka` (dead-letter topic,
whole-topic reads, watermark check), :mod:`auditlogkit.consumers.batch` (per-partition ranges). :mod:`auditlogkit.consumers.worker` builds
the chain and handles rebalances; :mod:`auditlogkit.consumers.cli` runs workers.
"""
