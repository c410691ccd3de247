"""``auditlog stream``: the log streams' deliverer (server mode), composed by :mod:`auditlogkit.server.app.compose`.

Needs ``AUDITLOG_STREAMS_KEY`` (32 random bytes, base64; the API's own): a missing or weak key exits 2 with the
reason, before anything starts. Migrates the store (with the operator's catalog), then delivers every stream it
holds a lease for (:class:`auditlogkit.query_api.streams.deliverer.Deliverer`); any number of replicas share the streams.
``--metrics-port`` serves Prometheus ``/metrics`` (the ``auditlog_stream_*`` series). SIGTERM/SIGINT: the batches
in flight are finished and their positions saved, the leases released, exit 0 (also during start-up); 1 if the
store cannot be opened.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from auditlogkit.server import logs
from auditlogkit.server.app.compose import Composition
from auditlogkit.server.private_dir import chdb_directory, keep_private
from auditlogkit.server.settings import Settings
from auditlogkit.server.stopsignals import StopSignals, stop_signals
from auditlogkit.server.store import redact_error, redact_url

log = logs.get_logger("auditlogkit.server.app.cli_stream")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stream", help="deliver the log streams to their destinations (any number of replicas)")
    p.add_argument("--metrics-port", type=int, default=0, help="port of Prometheus /metrics, 0 = none [0]")
    p.add_argument("--metrics-host", default="127.0.0.1", help="bind address of /metrics [127.0.0.1]")
    p.set_defaults(func=cmd_stream)


def cmd_stream(args: argparse.Namespace) -> int:
    from auditlogkit.query_api.streams.keys import StreamsKeyError, streams_key

    stops = stop_signals()
    s = Settings()
    logs.configure(s.log_level, fmt=s.log_format)
    try:
        key = streams_key(s.streams_key.get_secret_value() if s.streams_key else None)
    except StreamsKeyError as exc:
        print(f"auditlog stream: {exc}", file=sys.stderr)
        return 2
    keep_private(chdb_directory(s.store_url))
    return asyncio.run(_stream(s, key, args.metrics_port, args.metrics_host, stops))


async def _stream(s: Settings, key: bytes, metrics_port: int, metrics_host: str, stops: StopSignals) -> int:
    parts = Composition(s)
    log.info("stream.starting", store=redact_url(s.store_url), database=s.clickhouse_database, topic=s.topic)
    store = await asyncio.to_thread(parts.open_store, "stream", "stream",
                                    detail=lambda exc: redact_error(exc, s.store_url))
    if store is None:
        return 1
    if stops.requested:
        log.info("stream.start_aborted", signal=stops.requested)
        return 0
    deliverer = parts.stream_deliverer(store, key)  # (its metrics exist from here on)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, metrics_host)

    def stop(signame: str) -> None:
        log.info("stream.stop_requested", signal=signame)
        deliverer.request_stop()

    with stops.on_loop(stop):
        await deliverer.run()
    store.close()
    return 0
