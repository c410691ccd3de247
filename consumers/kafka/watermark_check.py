"""Watermark check against the current log: a watermark only counts for the log it was taken from.

Why: offsets identify a message only within one *incarnation* of a topic. The embedded broker with
``--ephemeral`` is memory-only (every such ``auditlog up`` starts a new log at offset 0) and a production topic can
be deleted and re-created. A
stored-offset watermark of 800 from the old log would make the worker skip offsets 0..800 of the new one:
silent loss. So on assignment each watermark is checked against the message now at that offset:

- stored watermark ``W``: the message at ``W`` must exist and carry an ``event_id`` that ``audit_events`` holds
  from exactly this topic, partition and offset; otherwise ``W`` becomes ``-1``;
- DLQ watermark ``D``: the message at ``D`` must exist and still be invalid; otherwise ``D`` becomes ``-1``.

Resetting is always safe: at worst a range is stored again, and then the dedup token and ReplacingMergeTree with
FINAL reads (same ``event_id`` and sorting key) still show every event once. Known limit: after a topic is
re-created (with the DLQ topic surviving), a new invalid message that happens to sit exactly at an old DLQ
watermark keeps that watermark, so the new log's invalid messages below it are skipped as already
dead-lettered and never reach the DLQ.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from auditlogkit.consumers.decode.decoder import validates
from auditlogkit.kafka import KafkaConnection, kafka_options
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.consumers.kafka.watermark_check")


async def messages_at(kafka: str | KafkaConnection, topic: str, wanted: dict[int, set[int]], timeout_s: float = 15.0
                      ) -> dict[tuple[int, int], tuple[bytes | None] | None]:
    """``{(partition, offset): (value,)}`` for the messages now at those offsets (``(None,)``: a message with a
    null value); ``None`` where the log has no message at that offset (shorter log, or removed by retention)."""
    out: dict[tuple[int, int], tuple[bytes | None] | None] = {}
    if not wanted:
        return out
    c = AIOKafkaConsumer(**kafka_options(kafka), enable_auto_commit=False, auto_offset_reset="earliest",
                         fetch_max_wait_ms=20, max_partition_fetch_bytes=8 * 1024 * 1024)
    try:  # started inside: a start cut short (broker gone, cancelled) is closed too
        await c.start()
        deadline = time.monotonic() + timeout_s
        for p, offsets in wanted.items():
            tp = TopicPartition(topic, p)
            c.assign([tp])
            for off in sorted(offsets):
                c.seek(tp, off)
                while (p, off) not in out:
                    recs = (await c.getmany(tp, timeout_ms=200, max_records=1)).get(tp, [])
                    hw = c.highwater(tp)
                    if recs:
                        out[(p, off)] = (recs[0].value,) if recs[0].offset == off else None
                    elif hw is not None and hw <= off:
                        out[(p, off)] = None
                    elif time.monotonic() > deadline:
                        raise TimeoutError(f"{topic}[{p}] did not deliver offset {off}")
    finally:
        await c.stop()
    return out


def _event_id(value: bytes | None) -> str | None:
    try:
        ev = json.loads(value) if value else None
    except ValueError:
        return None
    eid = ev.get("event_id") if isinstance(ev, dict) else None
    return eid if isinstance(eid, str) else None


async def verify_watermarks(
    kafka: str | KafkaConnection,
    topic: str,
    stored: dict[int, int],
    dlq: dict[int, int],
    is_stored: Callable[[str, int, int, str], Awaitable[bool]],
    catalog: Catalog,
) -> tuple[dict[int, int], dict[int, int]]:
    """The watermarks that belong to the current log (others reset to ``-1``); see the module doc."""
    wanted: dict[int, set[int]] = {}
    for wm in (stored, dlq):
        for p, off in wm.items():
            if off >= 0:
                wanted.setdefault(p, set()).add(off)
    found = await messages_at(kafka, topic, wanted)
    new_stored, new_dlq = dict(stored), dict(dlq)
    for p, off in stored.items():
        if off < 0:
            continue
        msg = found.get((p, off))
        eid = _event_id(msg[0]) if msg is not None else None
        if eid is None or not await is_stored(topic, p, off, eid):
            new_stored[p] = -1
    for p, off in dlq.items():
        if off < 0:
            continue
        msg = found.get((p, off))
        if msg is None or validates(msg[0], catalog):  # a null value is invalid: dead-lettered, keeps D
            new_dlq[p] = -1
    reset = {p: ("stored", stored[p]) for p in stored if new_stored[p] != stored[p]}
    reset.update({p: ("dlq", dlq[p]) for p in dlq if new_dlq[p] != dlq[p]})
    if reset:
        log.warning("watermarks.reset_new_log", topic=topic, partitions=reset)
    return new_stored, new_dlq
