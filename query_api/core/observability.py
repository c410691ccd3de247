"""Prometheus metrics and structlog access logs of the API (an ASGI middleware).

Contract:
- metrics live in prometheus_client's default REGISTRY (the embedded consumer registers its own there too), are
  created once per process, and are labelled by route template (``/v1/events/{event_id}``, without a parameter's
  convertor), never by raw path:
  ``auditlog_api_requests_total{method,route,status}``, ``auditlog_api_request_seconds{method,route}``
  (until the last body byte, so exports count fully), ``auditlog_api_rows_exported_total{format}``, and the live
  tail's ``auditlog_api_tail_streams``, ``auditlog_api_tail_polls_total``, ``auditlog_api_tail_events_total``, and
  ``auditlog_api_ingest_events_total{outcome}``;
- one ``api.request`` log line per request: method, route, path, status, ms, client, and the caller's ``sub`` /
  ``org_id`` when authenticated. Headers and the query string are not logged (no tokens, no e-mails);
- every request has a request id (its ``X-Request-ID`` when a sane token, else a new one:
  :func:`auditlogkit.context.request_id_from`), sent back in ``X-Request-ID``, bound to every log line written while
  it runs and readable with :func:`current_request_id` (the self-audit event's ``request_id``).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auditlogkit.context import request_id_from
from auditlogkit.server.logs import get_logger

ACCESS_LOGGER = "auditlogkit.query_api.core.observability"

REQUESTS = Counter("auditlog_api_requests_total", "API requests", ["method", "route", "status"])
LATENCY = Histogram("auditlog_api_request_seconds", "API request duration until the last byte", ["method", "route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120))
ROWS_EXPORTED = Counter("auditlog_api_rows_exported_total", "Rows streamed by exports", ["format"])
TAIL_STREAMS = Gauge("auditlog_api_tail_streams", "Live tails open in this process")
TAIL_POLLS = Counter("auditlog_api_tail_polls_total", "Store queries of the shared live-tail reader")
TAIL_EVENTS = Counter("auditlog_api_tail_events_total", "Events queued for live-tail clients")
INGEST_EVENTS = Counter("auditlog_api_ingest_events_total", "Events of POST /v1/ingest by outcome (accepted: "
                        "acknowledged by the broker; rejected: invalid or outside write_orgs; unavailable: refused "
                        "with 503)", ["outcome"])
for _outcome in ("accepted", "rejected", "unavailable"):  # the series exist (at 0) from the start
    INGEST_EVENTS.labels(_outcome)


_REQUEST_ID: ContextVar[str | None] = ContextVar("api_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served, or None outside one."""
    return _REQUEST_ID.get()


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)
        rid = request_id_from(given.decode("latin-1") if given is not None else None)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        token = _REQUEST_ID.set(rid)
        bound = structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - t0
            route_obj: Any = scope.get("route")
            route = getattr(route_obj, "path_format", None) or "unmatched"  # the template, without convertors
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            LATENCY.labels(scope["method"], route).observe(elapsed)
            state = scope.get("state")
            principal = state.get("principal") if isinstance(state, dict) else None  # set by deps.current_principal
            client = scope.get("client")
            # a fresh proxy per request: it follows the current structlog configuration (tests capture it)
            get_logger(ACCESS_LOGGER).info(
                "api.request", method=scope["method"], route=route, path=scope.get("path"), status=status,
                ms=round(elapsed * 1000, 1), client=client[0] if client else None,
                sub=getattr(principal, "sub", None), org_id=getattr(principal, "org_id", None))
            structlog.contextvars.reset_contextvars(**bound)
            _REQUEST_ID.reset(token)
