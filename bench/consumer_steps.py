"""CPU per event of each step of the consumer's hot path, each step alone, on the same N messages.

The messages are bench/ingest.py's (``tests.factories.random_events``: ~650 B JSON events over every catalog
action), published once to a 6-partition topic of an embedded Tansu broker. Steps, in hot-path order:
1. aiokafka: a partition-assigned (no group) ``AIOKafkaConsumer.getmany`` loop that only touches ``.value``
   (record unpacking, the floor), then the same loop + ``json.loads`` (what bench/ingest.py calls the raw consumer);
2. ``parse_event(bytes, catalog)``; and pydantic alone: ``model_validate_json`` of a copy of ``AuditEvent``
   without its ``_rules`` validator (types only), and (2c) with an empty "after" validator in its place: 2c - 2b
   = calling a model validator at all, 2a - 2c = the rule bodies (UTC/future, e-mail, IP, catalog, description)
   plus parse_event's wrapper;
3. ``event_row`` on already parsed events;
4. ``NativeEncoder.encode`` of chunks of ``--chunk`` rows (the worker's decode chunk);
5. ClickHouse: ``raw_insert`` of those Native blocks, ``--blocks`` per INSERT with a dedup token (as
   ``Inserter``), into ``audit_events`` of a freshly migrated chDB store; CPU of the whole process (all of chDB's
   threads, psutil) from the first insert to 1 s after the last (background work), per row. Runs last;
6. ``Decoder.decode_chunk`` per event, whole chunks (should be about 2a + 3 + 4).
Steps other than 5 use ``time.thread_time`` (this thread only). Each step runs ``--repeat`` times; the table
shows the median in CPU us per event and as a multiple of step 1b. Writes bench/results/consumer_steps.json.

Run: ``.venv/bin/python bench/consumer_steps.py [-n 100000] [--repeat 5] [--chunk 1000] [--blocks 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from common import cpu_seconds_of, machine, write_result
from ingest import produce
from pydantic import create_model, model_validator

from auditlogkit.consumers.decode.decoder import Chunk, Decoder
from auditlogkit.consumers.decode.native import NativeEncoder
from auditlogkit.consumers.store.inserter import Inserter
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.event import AuditEvent, _Strict, parse_event
from auditlogkit.schemas.rows import EVENT_COLUMNS, EVENTS_TABLE, event_row
from auditlogkit.server import logs
from auditlogkit.server.broker import EmbeddedBroker, ensure_topics
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.store import Store
from tests.factories import random_events

TOPIC = "bench.steps"
PARTITIONS = 6
# AuditEvent's fields and nested models, without the model validator: what pydantic alone costs
_FIELDS: dict[str, Any] = {k: (f.annotation, f) for k, f in AuditEvent.model_fields.items()}
TypesOnly: Any = create_model("TypesOnly", __base__=_Strict, **_FIELDS)
# ... plus an "after" model validator that does nothing: the cost of having one at all
_EMPTY: dict[str, Any] = {"_rules": model_validator(mode="after")(lambda self, _info: self)}
EmptyRule: Any = create_model("EmptyRule", __base__=_Strict, __validators__=_EMPTY, **_FIELDS)


def stats(seconds: list[float], n: int) -> dict[str, Any]:
    """Median and every run, in CPU us per event."""
    runs = [s / n * 1e6 for s in seconds]
    return {"us": round(statistics.median(runs), 2), "runs": [round(r, 2) for r in runs]}


def repeat(fn: Callable[[], float], reps: int, n: int) -> dict[str, Any]:
    """Run ``fn`` (returns the CPU seconds it spent) ``reps`` times."""
    return stats([fn() for _ in range(reps)], n)


def each(fn: Callable[[Any], object], items: Sequence[Any]) -> Callable[[], float]:
    """A run of ``fn`` on every item, results dropped at once (nothing piles up for the GC to scan, as in
    the worker): returns this thread's CPU seconds."""
    def run() -> float:
        t0 = time.thread_time()
        for x in items:
            fn(x)
        return time.thread_time() - t0
    return run


async def consume(bootstrap: str, n: int, loads: bool) -> float:
    """CPU seconds (this thread) of fetching all ``n`` messages with ``getmany`` (+ ``json.loads`` of each)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         max_partition_fetch_bytes=4 * 1024 * 1024)
    await c.start()
    try:
        tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        t0 = time.thread_time()
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        got = 0
        while got < n:
            batch = await c.getmany(timeout_ms=200, max_records=5000)
            for recs in batch.values():
                if loads:
                    for r in recs:
                        json.loads(r.value)
                else:
                    for r in recs:
                        r.value  # noqa: B018
                got += len(recs)
        return time.thread_time() - t0
    finally:
        await c.stop()


def insert_all(store: Store, blocks: list[bytes], per_insert: int, n: int, tag: str) -> float:
    """CPU seconds of the whole process for inserting ``blocks`` (``per_insert`` per INSERT) + 1 s after."""
    client = store.client()
    client.command(f"TRUNCATE TABLE {EVENTS_TABLE}")
    time.sleep(0.5)
    me = psutil.Process()
    c0 = cpu_seconds_of(me)
    for i in range(0, len(blocks), per_insert):
        client.raw_insert(EVENTS_TABLE, list(EVENT_COLUMNS), b"".join(blocks[i:i + per_insert]), fmt="Native",
                          settings={"insert_deduplication_token": f"{tag}:{i}"})
    time.sleep(1.0)  # merges and materialized views' background work count too
    return cpu_seconds_of(me) - c0


async def main(n: int, reps: int, chunk: int, per_insert: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "repeat": reps, "chunk_rows": chunk, "blocks_per_insert": per_insert,
                           "machine_before": machine()}
    values = [json.dumps(e).encode() for e in random_events(n, seed=1)]
    out["message_bytes_avg"] = round(sum(map(len, values)) / n)
    res: dict[str, dict[str, Any]] = {}
    with EmbeddedBroker() as broker:
        await ensure_topics(broker.bootstrap, [TOPIC], PARTITIONS)
        await produce(broker.bootstrap, TOPIC, values)
        for label, loads in (("1a aiokafka getmany, .value only", False), ("1b getmany + json.loads (raw)", True)):
            res[label] = stats([await consume(broker.bootstrap, n, loads) for _ in range(reps)], n)
    catalog = get_catalog()
    ctx = {"catalog": catalog}
    for label, fn in (("2a parse_event", lambda v: parse_event(v, catalog)),
                      ("2b pydantic types only (no _rules)", TypesOnly.model_validate_json),
                      ("2c types + empty after-validator", lambda v: EmptyRule.model_validate_json(v, context=ctx))):
        res[label] = repeat(each(fn, values), reps, n)
    at = datetime.now(UTC)
    store = Store(f"chdb://{tempfile.mkdtemp(prefix='bench-steps-')}/chdb", "bench_steps")
    migrate(store)
    ins = Inserter(store)
    encoder = NativeEncoder(ins._types())
    blocks: list[bytes] = []

    def rows_then_encode() -> tuple[float, float]:
        """Chunk by chunk, as decode_chunk: parse (not timed), event_row of each event, encode the chunk's rows."""
        t_rows = t_enc = 0.0
        blocks.clear()
        for i in range(0, n, chunk):
            evs = [parse_event(v, catalog) for v in values[i:i + chunk]]
            t0 = time.thread_time()
            rows = [event_row(e, at, TOPIC, 0, i + j) for j, e in enumerate(evs)]
            t1 = time.thread_time()
            blocks.append(encoder.encode(rows))
            t_rows, t_enc = t_rows + t1 - t0, t_enc + time.thread_time() - t1
        return t_rows, t_enc

    pairs = [rows_then_encode() for _ in range(reps)]
    res["3 event_row"] = stats([p[0] for p in pairs], n)
    res["4 NativeEncoder.encode"] = stats([p[1] for p in pairs], n)
    decoder = Decoder(catalog)
    chunks = [Chunk(TOPIC, 0, list(range(i, min(n, i + chunk))), values[i:i + chunk], at) for i in range(0, n, chunk)]
    res["6 Decoder.decode_chunk"] = repeat(each(lambda c: decoder.decode_chunk(c, encoder), chunks), reps, n)
    tags = iter(range(reps))
    res["5 ClickHouse insert (process)"] = repeat(
        lambda: insert_all(store, blocks, per_insert, n, f"r{next(tags)}"), reps, n)
    ins.close()
    order = sorted(res, key=lambda k: k.split()[0])
    raw = res["1b getmany + json.loads (raw)"]["us"]
    for k in order:
        res[k]["x_raw"] = round(res[k]["us"] / raw, 2)
    out["steps"] = {k: res[k] for k in order}
    ours = sum(res[k]["us"] for k in ("1a aiokafka getmany, .value only", "6 Decoder.decode_chunk",
                                       "5 ClickHouse insert (process)"))
    out["sum_1a_6_5_us"] = round(ours, 2)
    out["sum_2a_3_4_us"] = round(sum(res[k]["us"] for k in order if k[:2] in ("2a", "3 ", "4 ")), 2)
    out["machine_after"] = machine()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=100_000, help="messages [100000]")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each step, median kept [5]")
    ap.add_argument("--chunk", type=int, default=1000, help="rows per decode chunk / Native block [1000]")
    ap.add_argument("--blocks", type=int, default=10, help="Native blocks per INSERT [10]")
    args = ap.parse_args()
    logs.configure("warning")
    r = asyncio.run(main(args.n, args.repeat, args.chunk, args.blocks))
    print(f"{r['n']} messages of {r['message_bytes_avg']} B, median of {r['repeat']} runs, CPU us per event")
    print(f"{'step':38s} {'us/event':>9s} {'x raw':>6s}   runs")
    for k, v in r["steps"].items():
        print(f"{k:38s} {v['us']:9.2f} {v['x_raw']:6.2f}   {v['runs']}")
    print(f"2a + 3 + 4 = {r['sum_2a_3_4_us']} us (vs 6); ours = 1a + 6 + 5 = {r['sum_1a_6_5_us']} us/event")
    print(f"load average {r['machine_before']['loadavg_1m']} -> {r['machine_after']['loadavg_1m']} "
          f"on {r['machine_before']['cpus']} CPUs; written {write_result('consumer_steps', r)}")
