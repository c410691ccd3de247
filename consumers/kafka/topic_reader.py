"""Read a whole topic (all partitions, start to high watermark) with an unsubscribed consumer: used by
``auditlog dlq list|replay``, the tests and the benchmark."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from auditlogkit.kafka import KafkaConnection, kafka_options


async def read_topic(kafka: str | KafkaConnection, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every record of ``topic`` (all partitions, from the start up to each high watermark)."""
    c = AIOKafkaConsumer(**kafka_options(kafka), enable_auto_commit=False, auto_offset_reset="earliest",
                         max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    try:  # started inside: a start cut short (broker gone, cancelled) is closed too
        await c.start()
        parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        out: list[Any] = []
        done: set[TopicPartition] = set()
        pos = dict.fromkeys(tps, 0)
        deadline = time.monotonic() + timeout_s
        while len(done) < len(tps):
            batch = await c.getmany(timeout_ms=200)
            for tp, recs in batch.items():
                out.extend(recs)
                if recs:
                    pos[tp] = recs[-1].offset + 1
            for tp in tps:
                hw = c.highwater(tp)
                if hw is not None and pos[tp] >= hw:
                    done.add(tp)
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: {len(done)}/{len(tps)} partitions complete")
        return out
    finally:
        await c.stop()
