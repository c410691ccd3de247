"""``auditlog consume``: standalone consumer workers (server mode), composed by :mod:`auditlogkit.server.app.compose`.

Migrates the store (with the operator's catalog), creates the topics if missing, runs ``--workers N`` members of
the group in one process (asyncio tasks, each with its own Kafka clients and its own inserter thread), serves
``/metrics`` and ``/readyz`` on ``AUDITLOG_CONSUMER_METRICS_PORT`` (:func:`auditlogkit.consumers.cli.run_workers`).
SIGTERM/SIGINT: stop fetching, flush, commit, leave the group, exit 0 (bounded by
``AUDITLOG_CONSUMER_SHUTDOWN_TIMEOUT_S``; a signal during start-up ends it at the next step, exit 0). Exit 3 when
the DLQ-rate guard trips, 1 on any other fatal error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from auditlogkit.server import logs
from auditlogkit.server.app.compose import Composition
from auditlogkit.server.private_dir import chdb_directory, keep_private
from auditlogkit.server.settings import Settings
from auditlogkit.server.stopsignals import StopSignals, stop_signals

if TYPE_CHECKING:
    from auditlogkit.consumers.worker import ConsumerWorker

log = logs.get_logger("auditlogkit.server.app.cli_consume")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from auditlogkit.consumers.cli import common_arguments

    c = sub.add_parser("consume", help="run consumer workers (standalone, e.g. against external Kafka/ClickHouse)")
    common_arguments(c)
    c.add_argument("--workers", type=int, default=1, help="members of the group in this process [1]")
    c.add_argument("--group", default=None, help="consumer group [AUDITLOG_CONSUMER_GROUP]")
    c.add_argument("--clickhouse-url", default=None, help="chdb:///dir or http(s)://... [AUDITLOG_CLICKHOUSE_URL]")
    c.add_argument("--metrics-port", type=int, default=None,
                   help="port of /metrics and /readyz, 0 = none [AUDITLOG_CONSUMER_METRICS_PORT]")
    c.add_argument("--decode-processes", type=int, default=None,
                   help="decode helper processes; 0: none, -1: auto [AUDITLOG_CONSUMER_DECODE_PROCESSES]")
    c.add_argument("--no-create-topics", action="store_true", help="do not create missing topics")
    c.set_defaults(func=cmd_consume)


def cmd_consume(args: argparse.Namespace) -> int:
    from auditlogkit.consumers.cli import settings_from_args

    stops = stop_signals()  # from here on SIGTERM/SIGINT means a clean stop, also during start-up
    s = settings_from_args(args)
    logs.configure(s.log_level, fmt=s.log_format)
    if args.workers < 1:
        print("--workers must be >= 1", file=sys.stderr)
        return 2
    keep_private(chdb_directory(s.store_url))  # an embedded store: its files are the user's only
    return asyncio.run(_consume(s, args.workers, create_topics=not args.no_create_topics, stops=stops))


async def _consume(s: Settings, workers: int, create_topics: bool = True, stops: StopSignals | None = None) -> int:
    """Migrate, create the topics, run the workers until a stop signal (0), the DLQ guard (3) or a failure (1).
    A stop signal before the workers exist ends start-up at the next step, exit 0."""
    from auditlogkit.consumers.cli import run_workers
    from auditlogkit.server.broker import ensure_topics
    from auditlogkit.server.store import redact_error, redact_url

    stops = stops or stop_signals()
    ws: list[ConsumerWorker] = []

    def stop(signame: str) -> None:
        log.info("consumer.stop_requested", signal=signame)
        for w in ws:
            w.request_stop()

    with stops.on_loop(stop):
        parts = Composition(s)
        log.info("consumer.starting", store=redact_url(s.store_url), database=s.clickhouse_database,
                 bootstrap=str(parts.kafka), topic=s.topic, group=s.consumer_group, workers=workers)
        store = await asyncio.to_thread(parts.open_store, "consume", "consumer",
                                        detail=lambda exc: redact_error(exc, s.store_url))
        if store is None:
            return 1
        if create_topics and not stops.requested:
            await ensure_topics(parts.kafka, [s.topic, s.dlq_topic], s.topic_partitions, s.topic_replication)
        if stops.requested:
            log.info("consumer.start_aborted", signal=stops.requested)
            return 0
        ws.extend(parts.consumer_worker(store) for _ in range(workers))
        return await run_workers(s, ws, stop)
