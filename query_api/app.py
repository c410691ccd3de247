"""The read API (API.md) as a FastAPI application.

Contract of :func:`create_app`:
- serves ``/v1/events`` (list, detail, export), ``/v1/actors``, ``/v1/stats``, ``/v1/catalog``, ``/healthz``,
  ``/readyz``, ``/metrics``, the page at ``/`` (``query_api/static/index.html``) and ``/static``;
  OpenAPI at ``/openapi.json`` and ``/docs``;
- ``producer`` (started and stopped by the caller): when given, list and export calls publish
  ``audit_log.list`` / ``audit_log.export`` events for the caller;
- ``consumer_status`` (embedded ``up``): when given, ``/readyz`` includes its dict;
- every query goes through :class:`query_api.scoping.ScopedQuery`; database work runs in worker threads, each
  with its own client (``Store.client()``); exports run on a small pool of dedicated threads;
- no endpoint writes or deletes events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from auditlog import __version__
from auditlog.settings import Settings
from auditlog.store import Store
from producers.producer import AuditProducer
from query_api import api_events, api_insights, api_integrity, api_meta
from query_api.auth import TokenVerifier
from query_api.errors import install_error_handlers
from query_api.observability import AccessLogMiddleware
from query_api.self_audit import ReadCoalescer
from schemas.catalog import Catalog, get_catalog

EXPORT_THREADS = 4
_PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>Audit log</title>
<p>The audit-log page is not installed. The API is at <a href="/docs">/docs</a>.</p>
"""


def create_app(settings: Settings, store: Store, *, catalog: Catalog | None = None,
               producer: AuditProducer | None = None,
               consumer_status: Callable[[], dict] | None = None) -> FastAPI:
    pool = ThreadPoolExecutor(max_workers=EXPORT_THREADS, thread_name_prefix="export")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="auditlog read API", version=__version__, lifespan=lifespan,
        description="Read-only access to audit events: filtered pages, one event, streamed export, e-mail "
                    "autocomplete and stats, scoped to the caller's organization / workspaces (JWT bearer).",
    )
    app.state.settings = settings
    app.state.store = store
    app.state.catalog = catalog or get_catalog(settings.catalog_extra)
    app.state.producer = producer
    app.state.self_audit = "ok" if producer is not None else "off"  # query_api.cli may set "connecting"
    app.state.read_coalescer = ReadCoalescer()
    app.state.consumer_status = consumer_status
    app.state.verifier = TokenVerifier(settings)
    app.state.export_pool = pool
    install_error_handlers(app)
    app.add_middleware(AccessLogMiddleware)
    app.include_router(api_events.router)
    app.include_router(api_insights.router)
    app.include_router(api_integrity.router)
    app.include_router(api_meta.router)
    static = api_meta.STATIC_DIR
    static.mkdir(parents=True, exist_ok=True)
    if not (static / "index.html").exists():
        (static / "index.html").write_text(_PLACEHOLDER, encoding="utf-8")
    app.mount("/static", StaticFiles(directory=static), name="static")
    return app
