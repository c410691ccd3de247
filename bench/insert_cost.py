"""What ClickHouse's side of ingestion costs per row, and which part of the schema costs what (issue 5, item 6).

Decodes ``-n`` events once (the consumer's own :meth:`DecodeStep.decode_chunk`, blocks of ``--batch`` rows),
then inserts the same Native blocks into ``audit_events`` of a migrated chDB database, exactly as the consumer
does (``raw_insert``, one dedup token per insert), and measures the CPU seconds of this process (all of chDB's
threads) per row, plus one second of background work after the last insert. Then it removes one feature at a
time and inserts again: each materialized view, the ngram search index, the bloom indexes; last a plain
MergeTree without partitioning and a Null table. The differences are what each feature costs at insert time.
Also prints the CPU of decoding + encoding per event. Writes bench/results/insert_cost.json.

    .venv/bin/python bench/insert_cost.py [-n 200000] [--batch 8000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psutil
from common import cpu_seconds_of, machine, write_result

from auditlog import logs
from auditlog.migrations import migrate
from auditlog.store import Store
from consumers.decode import Chunk, DecodeStep
from consumers.inserter import Inserter
from consumers.native import NativeEncoder
from schemas.rows import EVENT_COLUMNS, EVENTS_TABLE
from tests.factories import random_events

_ME = psutil.Process()


def cpu() -> float:
    return cpu_seconds_of(_ME)


def main(n: int, batch: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "batch_rows": batch, "machine_before": machine()}
    values = [json.dumps(e).encode() for e in random_events(n, seed=1)]
    store = Store(f"chdb://{tempfile.mkdtemp(prefix='bench-insert-')}/chdb", "bench_insert")
    migrate(store)
    ins = Inserter(store)
    encoder = NativeEncoder(ins._types())
    step = DecodeStep()
    now = datetime.now(UTC)
    c0 = cpu()
    blocks = [step.decode_chunk(Chunk("t", 0, list(range(i, i + batch)), values[i:i + batch], now), encoder).block
              for i in range(0, n, batch)]
    out["decode_encode_cpu_us_per_event"] = round((cpu() - c0) / n * 1e6, 1)
    print(f"decode + encode: {out['decode_encode_cpu_us_per_event']} us CPU per event")
    client = store.client()
    steps: list[dict[str, Any]] = []

    def run(label: str, table: str = EVENTS_TABLE) -> None:
        if table != "nul":
            client.command(f"TRUNCATE TABLE {table}")
        time.sleep(0.5)
        c0, t0 = cpu(), time.perf_counter()
        for i, block in enumerate(blocks):
            client.raw_insert(table, list(EVENT_COLUMNS), block, fmt="Native",
                              settings={"insert_deduplication_token": f"{label}:{i}"})
        wall = time.perf_counter() - t0
        time.sleep(1.0)  # background work of these inserts (merges) counts too
        r = {"schema": label, "cpu_us_per_row": round((cpu() - c0) / n * 1e6, 1),
             "wall_us_per_row": round(wall / n * 1e6, 1)}
        steps.append(r)
        print(f"{label:45s} {r['cpu_us_per_row']:6.1f} us CPU/row  ({r['wall_us_per_row']} us wall)")

    run("full schema (as migrated)")
    for view, label in (("audit_event_digests_mv", "- SHA-256 digests MV (tamper evidence)"),
                        ("audit_daily_counts_mv", "- daily counts MV (stats)"),
                        ("audit_actors_mv", "- actors MV (e-mail autocomplete)"),
                        ("audit_events_offsets_mv", "- offsets MV (consumer watermarks)")):
        client.command(f"DROP VIEW {view}")
        run(label)
    client.command(f"ALTER TABLE {EVENTS_TABLE} DROP INDEX idx_search")
    run("- ngram search index")
    for idx in ("idx_actor_email", "idx_actor_ip", "idx_target_id", "idx_event_id"):
        client.command(f"ALTER TABLE {EVENTS_TABLE} DROP INDEX {idx}")
    run("- bloom filter indexes")
    client.command(f"CREATE TABLE plain AS {EVENTS_TABLE} ENGINE = MergeTree ORDER BY tuple()")
    run("plain MergeTree, no partitions, no sort key", "plain")
    client.command(f"CREATE TABLE nul AS {EVENTS_TABLE} ENGINE = Null")
    run("Null table (parse only)", "nul")
    ins.close()
    out["steps"] = steps
    out["machine_after"] = machine()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200_000, help="events [200000]")
    ap.add_argument("--batch", type=int, default=8_000, help="rows per insert [8000]")
    args = ap.parse_args()
    logs.configure("warning")
    res = main(args.n, args.batch)
    print(f"written {write_result('insert_cost', res)}")
