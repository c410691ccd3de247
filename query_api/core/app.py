"""The read API (API.md) as a FastAPI application.

Contract of :func:`create_app`:
- serves ``/v1/events`` (list, detail, export, the live tail ``/v1/events/stream``), ``/v1/actors``, ``/v1/stats``, ``/v1/catalog``, ``/healthz``,
  ``/readyz``, ``/metrics``, the page at ``/`` (``query_api/static/index.html``) and ``/static``;
  OpenAPI at ``/openapi.json`` and ``/docs``;
- ``producer`` (started and stopped by the caller) publishes ``POST /v1/ingest``; ``audit_producer`` (default:
  ``producer``; a producer of its own, so that reads' acks never wait behind ingest traffic) publishes every read's
  ``audit_log.*`` event, and the read is refused (503) when that fails (:mod:`auditlogkit.query_api.security.self_audit`);
  without one nothing is recorded (tests);
- ``/v1/streams`` (log streams, STREAMS.md) over a :class:`~auditlogkit.query_api.streams.store.StreamStore` built here with
  ``streams_key`` (the key's bytes; absent: ``AUDITLOG_STREAMS_KEY`` when set): without a usable key those routes
  answer 503 ``streams_unavailable``;
- ``consumer_status`` (embedded ``up``): when given, ``/readyz`` includes its dict; ``parts_status`` (``up``'s
  broker parts: ``{"broker": "ok" | "down", …}``): when given, ``/readyz`` includes it and is 503 while one is down;
- every query goes through :class:`auditlogkit.query_api.security.scoping.ScopedQuery` and runs on the API's own query threads
  with time and memory limits and at most ``api_queries_per_caller`` at once per caller
  (:mod:`auditlogkit.query_api.core.query_runner`); exports run on their own threads, limited per caller and in total
  (:mod:`auditlogkit.query_api.security.slots`); ``/v1`` calls are rate-limited per caller (:mod:`auditlogkit.query_api.security.ratelimit`);
- no endpoint edits or deletes events; ``POST /v1/ingest`` publishes new ones to the topic for service tokens
  (:mod:`auditlogkit.query_api.routes.ingest`), never straight into the store;
- the app-wide objects are set on ``app.state`` here and read per request only through :mod:`auditlogkit.query_api.deps`;
  the routers of :data:`ROUTERS` are included in any order (no path of one is taken by another's).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from auditlogkit.producer import AuditProducer
from auditlogkit.query_api.core.errors import install_error_handlers
from auditlogkit.query_api.core.observability import AccessLogMiddleware
from auditlogkit.query_api.core.query_runner import QueryRunner, limits_of
from auditlogkit.query_api.read.actors import ActorsWindow
from auditlogkit.query_api.read.integrity import IntegrityRuns
from auditlogkit.query_api.read.recent import window_for
from auditlogkit.query_api.read.tail import TailHub
from auditlogkit.query_api.routes import actors, events, health, ingest, integrity, page, stats, streams
from auditlogkit.query_api.routes import catalog as catalog_routes
from auditlogkit.query_api.security.auth import TokenVerifier
from auditlogkit.query_api.security.headers import install_browser_security
from auditlogkit.query_api.security.ratelimit import RateLimiter
from auditlogkit.query_api.security.self_audit import ReadAuditor
from auditlogkit.query_api.security.slots import Slots
from auditlogkit.query_api.streams.keys import StreamsKeyError
from auditlogkit.query_api.streams.keys import streams_key as configured_streams_key
from auditlogkit.query_api.streams.store import StreamStore
from auditlogkit.schemas.catalog import Catalog, get_catalog
from auditlogkit.server import __version__
from auditlogkit.server.logs import get_logger
from auditlogkit.server.provenance import API as API_PUBLISHER
from auditlogkit.server.provenance import signed_headers
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store

log = get_logger("auditlogkit.query_api.core.app")
#: every router of the API, one per resource
ROUTERS: tuple[APIRouter, ...] = (events.router, actors.router, stats.router, integrity.router,
                                  catalog_routes.router, health.router, ingest.router, page.router, streams.router)
_PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>Audit log</title>
<p>The audit-log page is not installed. The API is at <a href="/docs">/docs</a>.</p>
"""


def create_app(settings: Settings, store: Store, *, catalog: Catalog | None = None,
               producer: AuditProducer | None = None, audit_producer: AuditProducer | None = None,
               consumer_status: Callable[[], dict] | None = None,
               parts_status: Callable[[], dict[str, str]] | None = None,
               streams_key: bytes | None = None) -> FastAPI:
    # an export's thread may outlive its slot by the moment its query takes to stop: room for that
    pool = ThreadPoolExecutor(max_workers=2 * settings.api_exports_total, thread_name_prefix="export")
    ingest_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ingest")  # validation holds the GIL: two
    runner = QueryRunner(store, settings)
    auditor = ReadAuditor(audit_producer if audit_producer is not None else producer,
                          ack_timeout_s=settings.api_audit_ack_timeout_seconds)
    server_keys = settings.server_keys()
    auditor.sign = partial(signed_headers, server_keys, API_PUBLISHER)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        upkeep = asyncio.create_task(_audit_upkeep(auditor))
        try:
            yield
        finally:
            upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upkeep
            with contextlib.suppress(Exception):
                await asyncio.wait_for(auditor.flush_coalesced(everything=True), settings.api_audit_ack_timeout_seconds * 2)
            await app.state.tail_hub.close()
            pool.shutdown(wait=False, cancel_futures=True)
            ingest_pool.shutdown(wait=False, cancel_futures=True)
            runner.close()
            if app.state.page_window is not None:
                app.state.page_window.close()
            if app.state.streams is not None and app.state.streams.store is not store:
                app.state.streams.store.close()

    app = FastAPI(
        title="auditlog read API", version=__version__, lifespan=lifespan,
        docs_url=None, redoc_url=None, openapi_url="/openapi.json" if settings.api_docs else None,
        description="Read-only access to audit events: filtered pages, one event, streamed export, e-mail "
                    "autocomplete and stats, scoped to the caller's organization / workspaces (JWT bearer).",
    )
    app.state.settings = settings
    app.state.server_keys = server_keys  # signs list cursors, live-tail positions and the API's own messages
    app.state.store = store
    app.state.catalog = catalog or get_catalog(settings.catalog_extra)
    app.state.auditor = auditor  # auditlogkit.query_api.cli attaches the producers later ("connecting" until then)
    app.state.ingest_producer = producer
    app.state.runner = runner
    app.state.page_window = window_for(store, rows_per_org=settings.api_page_window_rows,
                                       max_bytes=settings.api_page_window_mib << 20,
                                       detail_max=settings.api_list_detail_max_bytes,
                                       retention_days=settings.retention_days, limits=limits_of(settings))
    app.state.actors_window = ActorsWindow(store) if settings.api_page_window_rows > 0 else None
    app.state.rate_limiter = RateLimiter(settings.api_rate_per_second, settings.api_rate_burst)
    app.state.ingest_rate_limiter = RateLimiter(settings.api_ingest_rate_per_second, settings.api_ingest_rate_burst)
    app.state.ingest_pool = ingest_pool
    app.state.ingest_slots = Slots(settings.api_ingest_per_caller, settings.api_ingest_total, noun="ingest requests")
    app.state.export_slots = Slots(settings.api_exports_per_caller, settings.api_exports_total)
    app.state.tail_hub = TailHub(store, runner, settings, app.state.catalog, app.state.server_keys)
    app.state.tail_slots = Slots(settings.api_tail_per_caller, settings.api_tail_total, noun="live tails")
    app.state.integrity_runs = IntegrityRuns(settings.api_integrity_cache_seconds)
    app.state.consumer_status = consumer_status
    app.state.parts_status = parts_status
    app.state.verifier = TokenVerifier(settings)
    app.state.streams, app.state.streams_unavailable = _streams(settings, store, app.state.catalog, streams_key)
    app.state.export_pool = pool
    install_error_handlers(app, [route for router in ROUTERS for route in router.routes])
    install_browser_security(app, settings)
    app.add_middleware(AccessLogMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    static = page.STATIC_DIR
    static.mkdir(parents=True, exist_ok=True)
    if not (static / "index.html").exists():
        (static / "index.html").write_text(_PLACEHOLDER, encoding="utf-8")
    app.mount("/static", StaticFiles(directory=static), name="static")
    return app


def _streams(settings: Settings, store: Store, catalog: Catalog, key: bytes | None) -> tuple[StreamStore | None, str]:
    """The streams' repository, or None and why not (no key, or a refused one: logged, never the key itself)."""
    if key is None:
        if settings.streams_key is None:
            return None, "no streams key is configured (AUDITLOG_STREAMS_KEY)"
        try:
            key = configured_streams_key(settings.streams_key.get_secret_value())
        except StreamsKeyError as exc:
            log.error("streams.key_refused", error=str(exc))
            return None, "AUDITLOG_STREAMS_KEY is refused (the server's log says why)"
    return StreamStore.from_settings(streams_store(settings, store), settings, catalog, key), ""


def streams_store(settings: Settings, store: Store) -> Store:
    """The store the streams' repository uses: ``store``, or on a server with ``AUDITLOG_STREAMS_CLICKHOUSE_USER``
    set the same server and database as that user (the role auditlog_streams may write the streams' tables;
    the API's own user is read-only)."""
    if store.embedded or not settings.streams_clickhouse_user:
        return store
    pw = settings.streams_clickhouse_password
    return Store(store.url, store.database, username=settings.streams_clickhouse_user,
                 password=pw.get_secret_value() if pw else None)


def end_live_tails(app: object) -> None:
    """End the live tails of an app of :func:`create_app` (a server's shutdown); anything else: nothing."""
    hub = getattr(getattr(app, "state", None), "tail_hub", None)
    if hub is not None:
        hub.end_all()


async def _audit_upkeep(auditor: ReadAuditor, every_s: float = 5.0) -> None:
    """Publish folded list reads whose window closed, and probe the broker while the self-audit is failing."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await auditor.probe()
            await auditor.flush_coalesced()
        except Exception as exc:  # never let the upkeep die
            log.error("self_audit.upkeep_failed", error=repr(exc))
