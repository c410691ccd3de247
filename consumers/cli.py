"""``auditlog dlq list|replay``, and the running of ``auditlog consume``'s workers (composed by the application
layer, which registers ``consume`` with :func:`common_arguments` and :func:`settings_from_args`).

- :func:`run_workers`: runs the workers (and ``/metrics``, ``/readyz`` on ``AUDITLOG_CONSUMER_METRICS_PORT``) until
  all returned: 0 after a stop, :data:`EXIT_DLQ_LIMIT` when the DLQ-rate guard trips, 1 on any other failure.
- ``dlq list``: counts of dead letters by field and reason class (``--json`` for machines).
- ``dlq replay``: re-publishes dead-lettered originals (value, key, producer headers) to the main topic with a
  progress bar; by default only those that validate now (e.g. after a catalog fix). Replaying twice is
  harmless for valid events (same ``event_id`` = one event); still-invalid ones would go back to the DLQ.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

from auditlogkit.consumers.kafka.dlq import (
    H_FIELD,
    H_OFFSET,
    H_PARTITION,
    H_REASON,
    H_TIME,
    H_TOPIC,
    DlqLimitExceeded,
    header,
    original_headers,
)
from auditlogkit.kafka import KafkaConnection, kafka_options
from auditlogkit.server import logs
from auditlogkit.server.settings import Settings

log = logs.get_logger("auditlogkit.consumers.cli")
EXIT_DLQ_LIMIT = 3
H_REPLAY_OF = "auditlog.replay.of"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("dlq", help="inspect and replay the dead-letter topic")
    dsub = d.add_subparsers(dest="dlq_command", metavar="ACTION")
    lst = dsub.add_parser("list", help="dead letters by field and reason")
    common_arguments(lst)
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.add_argument("--samples", type=int, default=0, help="also show the newest N dead letters")
    lst.set_defaults(func=cmd_dlq_list)
    rep = dsub.add_parser("replay", help="re-publish dead-lettered originals to the main topic")
    common_arguments(rep)
    rep.add_argument("--field", default=None, help="only dead letters of this field (dlq.error.field)")
    rep.add_argument("--reason", default=None, help="only dead letters whose reason contains this text")
    rep.add_argument("--all", action="store_true", help="also replay messages that are still invalid")
    rep.add_argument("--dry-run", action="store_true", help="count only, publish nothing")
    rep.set_defaults(func=cmd_dlq_replay)

    def dlq_help(_a: argparse.Namespace) -> int:
        d.print_help()
        return 2

    d.set_defaults(func=dlq_help)


def common_arguments(p: argparse.ArgumentParser) -> None:
    """The Kafka and data-directory options of ``consume`` and the ``dlq`` actions."""
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap [AUDITLOG_KAFKA_BOOTSTRAP]")
    p.add_argument("--topic", default=None, help="events topic [AUDITLOG_TOPIC]")
    p.add_argument("--dlq-topic", default=None, help="dead-letter topic [AUDITLOG_DLQ_TOPIC]")
    p.add_argument("--data", default=None, help="data directory [AUDITLOG_DATA_DIR]")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings with the flags of ``args`` over ``AUDITLOG_*``."""
    upd: dict[str, Any] = {}
    for flag, field in (("bootstrap", "kafka_bootstrap"), ("topic", "topic"), ("dlq_topic", "dlq_topic"),
                        ("group", "consumer_group"), ("clickhouse_url", "clickhouse_url"),
                        ("metrics_port", "consumer_metrics_port"),
                        ("decode_processes", "consumer_decode_processes")):
        v = getattr(args, flag, None)
        if v is not None:
            upd[field] = v
    return Settings().with_overrides(data=getattr(args, "data", None), **upd)


# ----- consume ------------------------------------------------------------------------------------------
async def run_workers(s: Settings, ws: list[Any], stop: Callable[[str], None]) -> int:
    """Run the workers (and ``/metrics`` when configured) until all returned; the exit code."""
    from auditlogkit.consumers.health import HealthServer
    from auditlogkit.server.store import redact_error

    health = None
    if s.consumer_metrics_port:
        health = HealthServer(s.consumer_metrics_host, s.consumer_metrics_port, lambda: [w.status() for w in ws])
        health.start()
        beat = asyncio.create_task(health.heartbeat(), name="health-heartbeat")
        log.info("consumer.metrics_listening", url=f"http://{s.consumer_metrics_host}:{health.port}/metrics")
    tasks = [asyncio.create_task(w.run(), name=w.name) for w in ws]
    code = 0
    try:
        for fut in asyncio.as_completed(tasks):
            try:
                await fut
            except DlqLimitExceeded as exc:
                print(f"auditlog consume: stopped: {exc}", file=sys.stderr)
                code = EXIT_DLQ_LIMIT
                stop("dlq_limit")
            except Exception as exc:
                msg = redact_error(exc, s.store_url)
                log.error("consumer.failed", error=msg)
                print(f"auditlog consume: failed: {msg}", file=sys.stderr)
                code = code or 1
                stop("error")
    finally:
        if health is not None:
            beat.cancel()
            health.stop()
    return code


# ----- dlq ----------------------------------------------------------------------------------------------
def reason_class(reason: str) -> str:
    """A reason without its variable parts (quoted values, parenthesised details, numbers)."""
    r = re.sub(r"\([^)]*\)", "", reason)
    r = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", r)
    r = re.sub(r"; valid: .*$", "", r)
    r = re.sub(r"(?<![\w-])\d+(?![\w-])", "N", r)
    return re.sub(r"\s+", " ", r).strip()[:120]


def _dead_letters(s: Settings) -> list[Any]:
    from auditlogkit.consumers.kafka.topic_reader import read_topic

    return asyncio.run(read_topic(KafkaConnection.from_settings(s), s.dlq_topic, timeout_s=120))


def cmd_dlq_list(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    recs = _dead_letters(s)
    counts: Counter[tuple[str, str, str]] = Counter()
    for r in recs:
        counts[(header(r.headers, H_TOPIC) or "?", header(r.headers, H_FIELD) or "?",
                reason_class(header(r.headers, H_REASON) or "?"))] += 1
    samples = sorted(recs, key=lambda r: r.timestamp)[-args.samples:] if args.samples else []
    if args.json:
        print(json.dumps({
            "topic": s.dlq_topic,
            "total": len(recs),
            "reasons": [{"source_topic": t, "field": f, "reason": rc, "count": n}
                        for (t, f, rc), n in counts.most_common()],
            "samples": [_sample(r) for r in samples],
        }, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{s.dlq_topic}: {len(recs)} dead letters")
    for col in ("count", "source topic", "field", "reason"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for (t, f, rc), n in counts.most_common():
        table.add_row(str(n), t, f, rc)
    console.print(table)
    for r in samples:
        console.print(_sample(r))
    return 0


def _sample(r: Any) -> dict[str, Any]:
    return {
        "dlq_partition": r.partition, "dlq_offset": r.offset,
        "source": f"{header(r.headers, H_TOPIC)}:{header(r.headers, H_PARTITION)}:{header(r.headers, H_OFFSET)}",
        "field": header(r.headers, H_FIELD), "reason": header(r.headers, H_REASON),
        "time": header(r.headers, H_TIME), "bytes": len(r.value or b""),
    }


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    return asyncio.run(_replay(s, args.field, args.reason, args.all, args.dry_run))


async def _replay(s: Settings, field: str | None, reason: str | None, replay_all: bool, dry_run: bool) -> int:
    from aiokafka import AIOKafkaProducer
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from auditlogkit.consumers.decode.decoder import validates
    from auditlogkit.consumers.kafka.topic_reader import read_topic
    from auditlogkit.schemas.catalog import get_catalog

    console = Console(stderr=True)
    recs = await read_topic(KafkaConnection.from_settings(s), s.dlq_topic, timeout_s=120)
    chosen = [
        r for r in recs
        if (field is None or header(r.headers, H_FIELD) == field)
        and (reason is None or reason in (header(r.headers, H_REASON) or ""))
    ]
    catalog = get_catalog(s.catalog_extra)
    todo = chosen if replay_all else [r for r in chosen if validates(r.value, catalog)]
    still_invalid = len(chosen) - len(todo)
    sent = 0
    if todo and not dry_run:
        producer = AIOKafkaProducer(**kafka_options(KafkaConnection.from_settings(s)), acks="all", linger_ms=5,
                                    max_request_size=16 * 1024 * 1024)
        await producer.start()
        try:
            with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=console) as progress:
                task = progress.add_task("replay", total=len(todo))
                for i in range(0, len(todo), 500):
                    chunk = todo[i:i + 500]
                    futs = [
                        await producer.send(
                            s.topic, value=r.value, key=r.key,
                            headers=[*original_headers(r.headers),
                                     (H_REPLAY_OF, f"{s.dlq_topic}:{r.partition}:{r.offset}".encode())],
                        )
                        for r in chunk
                    ]
                    await asyncio.gather(*futs)
                    sent += len(chunk)
                    progress.update(task, advance=len(chunk))
        finally:
            await producer.stop()
    print(json.dumps({"dead_letters": len(recs), "matched": len(chosen), "still_invalid_skipped": still_invalid,
                      "replayed": sent, "dry_run": dry_run, "to_topic": s.topic}))
    return 0
