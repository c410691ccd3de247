"""``auditlog api [--host] [--port]``: the read API and the page (uvicorn), composed by :mod:`auditlogkit.server.app.compose`.

Serves against ``AUDITLOG_CLICKHOUSE_URL`` (a server, or a ``chdb:///dir`` store when no other process holds that
directory: chDB locks it), migrated on start with the operator's catalog. Every read publishes its ``audit_log.*``
event through a producer of its own (``POST /v1/ingest`` has another, so reads' acks never wait behind ingest
traffic); both are attached with retries while serving (:func:`auditlogkit.query_api.cli.serve_api`). SIGTERM/SIGINT: exit 0
(also during start-up); 1 if the store cannot be opened.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from auditlogkit.server.app.compose import Composition
from auditlogkit.server.logs import configure, get_logger
from auditlogkit.server.private_dir import chdb_directory, keep_private
from auditlogkit.server.settings import Settings
from auditlogkit.server.stopsignals import StopSignals, stop_signals
from auditlogkit.server.store import redact_text, redact_url

if TYPE_CHECKING:
    from auditlogkit import AuditProducer
    from auditlogkit.server.store import Store

log = get_logger("auditlogkit.server.app.cli_api")
REQUEST_TIMEOUT_MS = 5000  # a producer that cannot reach Kafka fails fast and is retried (attach_self_audit)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser("api", help="serve the read API and the page (uvicorn)")
    a.add_argument("--host", default=None, help="bind address [AUDITLOG_API_HOST, default 127.0.0.1]")
    a.add_argument("--port", type=int, default=None, help="port [AUDITLOG_API_PORT, default 8000]")
    a.set_defaults(func=run_api)


def run_api(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT (exit 0; also when the signal arrives during start-up), 1 if the store cannot
    be opened."""
    from auditlogkit.query_api.cli import warn_unchecked_claims

    stops = stop_signals()
    settings = Settings()
    configure(settings.log_level, fmt=settings.log_format)
    host, port = args.host or settings.api_host, args.port if args.port is not None else settings.api_port
    log.info("api.starting", host=host, port=port, store=redact_url(settings.store_url))
    warn_unchecked_claims(settings, host)
    parts = Composition(settings)
    store = _open_store(parts)
    if store is None:
        return 1
    if not stops.requested:
        asyncio.run(_serve(parts, store, host, port, stops))
    log.info("api.stopped", signal=stops.requested)
    print("auditlog api: stopped", file=sys.stderr)
    return 0


def _open_store(parts: Composition) -> Store | None:
    """The migrated store (an embedded one made private to the user), or None after saying why it cannot open."""
    keep_private(chdb_directory(parts.settings.store_url))
    return parts.open_store("api", "api", detail=lambda exc: redact_text(str(exc), parts.settings.store_url),
                            hint_embedded=True)


def api_producers(parts: Composition) -> tuple[Callable[[], AuditProducer], Callable[[], AuditProducer]]:
    """What makes the self-audit's producer and the ingest one (each attempt of the retries makes a new one)."""
    return (lambda: parts.self_audit_producer(request_timeout_ms=REQUEST_TIMEOUT_MS),
            lambda: parts.ingest_producer(request_timeout_ms=REQUEST_TIMEOUT_MS))


async def _serve(parts: Composition, store: Store, host: str, port: int, stops: StopSignals) -> None:
    from auditlogkit.query_api.cli import serve_api

    make_audit_producer, make_ingest_producer = api_producers(parts)
    await serve_api(parts.settings, parts.api_app(store), host, port, stops, make_audit_producer=make_audit_producer,
                    make_ingest_producer=make_ingest_producer, where=str(parts.kafka))
