"""ClickHouse's CPU per inserted row, and what each feature of the schema costs (chDB, in-process).

Each variant (the migrated schema; the same with ONE feature removed, each alone; alternatives; insert settings;
floors) gets its own database and the same Native blocks of the consumer (``Decoder.decode_chunk`` +
``NativeEncoder``), ``--batch`` rows per INSERT with a dedup token. Measured: CPU of this process (psutil, all
threads) from the first INSERT to ``--tail`` s after the last, per row; variants interleaved, median of ``--repeat``.
``--split``: merges stopped during the inserts (insert-only), then one ``OPTIMIZE FINAL`` (one merge level).
Writes bench/results/insert_cost.json.

    .venv/bin/python bench/insert_cost.py [-n 200000] [--batch 10000 50000] [--repeat 3] [--split] [--only a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psutil
from common import cpu_seconds_of, machine, write_result

from auditlogkit.consumers.decode.decoder import Chunk, Decoder
from auditlogkit.consumers.decode.native import NativeEncoder
from auditlogkit.schemas.rows import EVENT_COLUMNS, EVENTS_TABLE
from auditlogkit.server import logs
from auditlogkit.server.db.migrations import migration_files, render_migration
from auditlogkit.server.store import Store
from tests.factories import random_events

_ME = psutil.Process()
E, DIGESTS, DAILY = EVENTS_TABLE, "audit_event_digests", "audit_daily_counts"
SEARCH = ("lowerUTF8(concat(ifNull(actor_email, ''), ' ', ifNull(target_id, ''), ' ', ifNull(target_name, ''), "
          "' ', description))")
NGRAM_TYPE = "TYPE ngrambf_v1(3, 65536, 3, 0) GRANULARITY 4"
#: Insert settings of the recommended design: no ReplacingMergeTree collapse inside each inserted block (FINAL and
#: merges collapse anyway) and the ngram index built by the first merge instead of at insert (merges rebuild it).
LEAN = {"optimize_on_insert": 0, "exclude_materialize_skip_indexes_on_insert": "idx_search"}

Ddl = list[str]
Transform = Callable[[Ddl], Ddl]


def full_schema(db: str) -> Ddl:
    """The statements that create the migrated schema in an empty database ``db``."""
    out: Ddl = []
    for m in migration_files():
        out += [s for s in render_migration(m.sql, db, 400) if not re.match(r"\s*(INSERT|ALTER|CREATE (OR REPLACE )?VIEW)\b", s, re.I)]
    return out


def sub(table: str, old: str, new: str, *, regex: bool = False) -> Transform:
    """Replace ``old`` in the CREATE TABLE of ``table`` (ValueError when it is not there)."""
    def tf(ddl: Ddl) -> Ddl:
        out, hit = [], False
        for s in ddl:
            if re.search(rf"CREATE TABLE IF NOT EXISTS \w+\.{table}\b", s):
                s2 = re.sub(old, new, s) if regex else s.replace(old, new)
                hit, s = hit or s2 != s, s2
            out.append(s)
        if not hit:
            raise ValueError(f"{old!r} not in {table}")
        return out
    return tf


def no_view(view: str) -> Transform:
    def tf(ddl: Ddl) -> Ddl:
        out = [s for s in ddl if not re.search(rf"\.{view}\b", s)]
        if len(out) != len(ddl) - 1:
            raise ValueError(f"no view {view}")
        return out
    return tf


def no_index(*names: str) -> Transform:
    def tf(ddl: Ddl) -> Ddl:
        for n in names:
            ddl = sub(E, rf"\n\s+INDEX {n} [^\n]*(\n\s+TYPE [^\n]*)?", "", regex=True)(ddl)
        return [re.sub(r",\s*\n\)\nENGINE", "\n)\nENGINE", s) for s in ddl]
    return tf


def chain(*tfs: Transform) -> Transform:
    def tf(ddl: Ddl) -> Ddl:
        for t in tfs:
            ddl = t(ddl)
        return ddl
    return tf


def floor(engine: str) -> Transform:
    """audit_events alone, no index, no view, no partitions/TTL/settings: ``engine``."""
    return lambda ddl: [re.sub(r"(?s)\n\s*,?\s*INDEX .*?\n\)\nENGINE = ReplacingMergeTree\n.*", f"\n)\nENGINE = {engine}", s)
                        for s in ddl if "MATERIALIZED VIEW" not in s]


def search_index(type_: str) -> Transform:
    return sub(E, NGRAM_TYPE, type_)


_SAME: Transform = chain()
_DIG_BY_OFFSET = sub(DIGESTS, "ORDER BY (org_id, event_id)", "ORDER BY (kafka_topic, kafka_partition, kafka_offset)")
_OFFSETS_PROJECTION = chain(
    no_view("audit_events_offsets_mv"),
    sub(E, "\n)\nENGINE = ReplacingMergeTree", ",\n    PROJECTION p_offsets (SELECT kafka_topic, kafka_partition, "
        "max(kafka_offset) GROUP BY kafka_topic, kafka_partition)\n)\nENGINE = ReplacingMergeTree"),
    sub(E, "index_granularity = 8192", "index_granularity = 8192, deduplicate_merge_projection_mode = 'rebuild'"))

#: name -> (DDL transform of the full schema, INSERT settings, what it is)
VARIANTS: dict[str, tuple[Transform, dict[str, Any], str]] = {
    "full": (_SAME, {}, "the schema as migrated"),
    "-digests_mv": (no_view("audit_event_digests_mv"), {}, "without the SHA-256 digests view (tamper evidence)"),
    "-daily_counts_mv": (no_view("audit_daily_counts_mv"), {}, "without the daily counts view (stats)"),
    "-actors_mv": (no_view("audit_actors_mv"), {}, "without the actors view (e-mail autocomplete)"),
    "-offsets_mv": (no_view("audit_events_offsets_mv"), {}, "without the offsets view (consumer watermarks)"),
    "-ngram_index": (no_index("idx_search"), {}, "without the ngram search index"),
    "-bloom_actor_email": (no_index("idx_actor_email"), {}, "without that bloom filter index"),
    "-bloom_actor_ip": (no_index("idx_actor_ip"), {}, "without that bloom filter index"),
    "-bloom_target_id": (no_index("idx_target_id"), {}, "without that bloom filter index"),
    "-bloom_event_id": (no_index("idx_event_id"), {}, "without that bloom filter index"),
    "-all_4_blooms": (no_index("idx_actor_email", "idx_actor_ip", "idx_target_id", "idx_event_id"), {},
                      "without the four bloom filter indexes"),
    "MergeTree_not_Replacing": (sub(E, "ENGINE = ReplacingMergeTree", "ENGINE = MergeTree"), {},
                                "audit_events a plain MergeTree"),
    "-partition_by_month": (sub(E, "PARTITION BY toYYYYMM(occurred_at)\n", ""), {}, "audit_events not partitioned"),
    "-dedup_windows": (chain(sub(E, "non_replicated_deduplication_window = 1000, ", ""),
                             sub(DIGESTS, "\nSETTINGS non_replicated_deduplication_window = 1000", "")), {},
                       "no non_replicated_deduplication_window (audit_events, digests)"),
    "-zstd_detail": (sub(E, " CODEC(ZSTD(3))", ""), {}, "detail with the default codec (LZ4)"),
    "-ttl": (sub(E, r"TTL toDateTime\(occurred_at\) \+ INTERVAL \d+ DAY DELETE\n", "", regex=True), {},
             "audit_events without its retention TTL"),
    # alternatives
    "ngram_16k": (search_index("TYPE ngrambf_v1(3, 16384, 3, 0) GRANULARITY 4"), {}, "ngram filter of 16 KiB"),
    "ngram_granularity_8": (search_index("TYPE ngrambf_v1(3, 65536, 3, 0) GRANULARITY 8"), {},
                            "ngram filter per 8 granules"),
    "text_ngrams3": (search_index("TYPE text(tokenizer = ngrams(3))"), {}, "text (inverted) index, 3-grams"),
    "text_splitByNonAlpha": (search_index("TYPE text(tokenizer = splitByNonAlpha)"), {}, "text index, words"),
    "offsets_projection_not_mv": (_OFFSETS_PROJECTION, {}, "watermark by an aggregate projection, not a view"),
    "digests_by_offset": (_DIG_BY_OFFSET, {}, "digests ORDER BY (kafka_topic, kafka_partition, kafka_offset)"),
    "set_optimize_on_insert=0": (_SAME, {"optimize_on_insert": 0}, "INSERT setting"),
    "set_materialize_skip_indexes_on_insert=0": (_SAME, {"materialize_skip_indexes_on_insert": 0}, "INSERT setting"),
    "set_exclude_idx_search_on_insert": (_SAME, {"exclude_materialize_skip_indexes_on_insert": "idx_search"},
                                         "INSERT setting"),
    "set_parallel_view_processing=1": (_SAME, {"parallel_view_processing": 1}, "INSERT setting"),
    "set_max_insert_threads=1": (_SAME, {"max_insert_threads": 1}, "INSERT setting"),
    "recommended": (_SAME, LEAN, "the schema as migrated + LEAN insert settings"),
    # floors
    "plain_MergeTree": (floor("MergeTree ORDER BY (org_id, occurred_at, event_id)"), {},
                        "audit_events alone: no index, view, partition, TTL"),
    "Null_table": (floor("Null"), {}, "parse only"),
}


def blocks_of(n: int) -> tuple[list[bytes], float]:
    """The consumer's Native blocks of ``n`` events (1000-row chunks) and the CPU us per event to make them."""
    values = [json.dumps(e).encode() for e in random_events(n, seed=1)]
    c = Store(f"chdb://{tempfile.mkdtemp(prefix='bench-insert-')}/chdb", "types").admin_client()
    c.command("CREATE DATABASE types")
    c.command(full_schema("types")[0])  # audit_events: the column types the consumer's encoder reads
    types = tuple(t.name for t in c.create_insert_context(f"types.{E}", list(EVENT_COLUMNS)).column_types)
    encoder, decoder, now = NativeEncoder(types), Decoder(), datetime.now(UTC)
    c0 = cpu_seconds_of(_ME)
    out = [decoder.decode_chunk(Chunk("t", 0, list(range(i, min(n, i + 1000))), values[i:i + 1000], now), encoder).block
           for i in range(0, n, 1000)]
    return out, (cpu_seconds_of(_ME) - c0) / n * 1e6


def main(n: int, batches: list[int], reps: int, tail: float, split: bool, only: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "repeat": reps, "tail_s": tail, "split": split, "machine_before": machine()}
    blocks, out["decode_encode_cpu_us_per_event"] = blocks_of(n)
    print(f"decode + encode: {out['decode_encode_cpu_us_per_event']:.1f} us CPU per event")
    c = Store(f"chdb://{tempfile.mkdtemp(prefix='bench-insert-')}/chdb", "types").admin_client()
    dbs: dict[str, tuple[str, list[str]]] = {}
    for i, name in enumerate(only or VARIANTS):
        db = f"v{i}"
        try:
            ddl = VARIANTS[name][0](full_schema(db))
        except ValueError as e:  # the migrations changed under this variant
            print(f"skipped {name}: {e}")
            continue
        c.command(f"CREATE DATABASE {db}")
        for s in ddl:
            c.command(s)
        tables = [r[0] for r in c.query("SELECT name FROM system.tables WHERE database = {d:String} AND engine "
                                        "LIKE '%MergeTree'", parameters={"d": db}).result_rows]
        dbs[name] = (db, tables)
    names = list(dbs)
    out["variants"] = {k: VARIANTS[k][2] + (f" {VARIANTS[k][1]}" if VARIANTS[k][1] else "") for k in names}
    out["batches"] = {}
    for batch in batches:
        per = max(1, batch // 1000)
        inserts = [b"".join(blocks[i:i + per]) for i in range(0, len(blocks), per)]
        runs: dict[str, list[float]] = {k: [] for k in names}
        merges: dict[str, list[float]] = {k: [] for k in names}
        for rep in range(reps):
            for name in names[rep % len(names):] + names[:rep % len(names)]:  # a rotated order each round
                db, tables = dbs[name]
                target = f"{db}.{E}"
                if split:
                    for t in tables:
                        c.command(f"SYSTEM STOP MERGES {db}.{t}")
                time.sleep(0.5)
                c0 = cpu_seconds_of(_ME)
                for k, block in enumerate(inserts):
                    c.raw_insert(target, list(EVENT_COLUMNS), block, fmt="Native",
                                 settings={"insert_deduplication_token": f"{batch}:{rep}:{k}", **VARIANTS[name][1]})
                time.sleep(tail)  # background work of these inserts (merges) counts too
                runs[name].append(round((cpu_seconds_of(_ME) - c0) / n * 1e6, 2))
                if split:
                    c0 = cpu_seconds_of(_ME)
                    for t in tables:
                        c.command(f"SYSTEM START MERGES {db}.{t}")
                    for t in tables:
                        c.command(f"OPTIMIZE TABLE {db}.{t} FINAL")
                    time.sleep(tail)
                    merges[name].append(round((cpu_seconds_of(_ME) - c0) / n * 1e6, 2))
                for t in tables:
                    c.command(f"TRUNCATE TABLE {db}.{t}")
        res: dict[str, Any] = {}
        for name in names:
            r = {"us": round(statistics.median(runs[name]), 2), "runs": runs[name]}
            if split:
                r |= {"merge_us": round(statistics.median(merges[name]), 2), "merge_runs": merges[name]}
            res[name] = r
        full = res.get("full", {}).get("us")
        print(f"\n{batch} rows per INSERT, CPU us per row, median of {reps}"
              f"{' (merges stopped; one OPTIMIZE FINAL after)' if split else ''}, delta vs full:")
        for name, r in res.items():
            if full is not None:
                r["delta_vs_full"] = round(r["us"] - full, 2)
            m = f"  merge {r['merge_us']:5.2f} {r['merge_runs']}" if split else ""
            print(f"{name:42s} {r['us']:6.2f} {r.get('delta_vs_full', 0):+6.2f}  {r['runs']}{m}")
        out["batches"][str(batch)] = res
    out["machine_after"] = machine()
    out["loadavg_note"] = f"1-min load average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200_000, help="events [200000]")
    ap.add_argument("--batch", type=int, nargs="+", default=[10_000, 50_000], help="rows per INSERT [10000 50000]")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each variant, median kept [3]")
    ap.add_argument("--tail", type=float, default=1.0, help="seconds measured after the last INSERT [1.0]")
    ap.add_argument("--split", action="store_true", help="merges stopped during inserts, then OPTIMIZE FINAL")
    ap.add_argument("--only", default="", help=f"comma-separated variants [all: {','.join(VARIANTS)}]")
    args = ap.parse_args()
    logs.configure("warning")
    res = main(args.n, args.batch, args.repeat, args.tail, args.split, [x for x in args.only.split(",") if x])
    print(f"written {write_result('insert_cost', res)}")
