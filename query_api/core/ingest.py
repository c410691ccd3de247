"""HTTP ingest (``POST /v1/ingest``): a request body into validated events, published like the producer SDK does.

Contract:
- :func:`read_body` reads at most ``max_bytes``: a larger ``Content-Length`` is refused before reading, a longer
  body as soon as it passes the cap (413 ``payload_too_large``); nothing unbounded is held in memory;
- :func:`parse_body`: ``application/json`` is one event (not JSON: 400); ``application/x-ndjson`` (or
  ``application/ndjson``) is one event per line, at most ``max_events`` (more: 413); blank lines are ignored and
  not counted; any other content type: 415. Every event goes through :func:`auditlogkit.schemas.event.parse_event` (the
  consumer's and the SDK's validator) with ``event_id`` and ``occurred_at`` required (never filled in: a retry of
  the same body is the same events), the reserved category refused (``reserved``: who read the audit log is
  written only by the API), then through the token's ``write_orgs``. A refused event is a
  :class:`Rejection` whose ``index`` is its 0-based position among the non-blank lines (0 for a single event);
  a line that is not JSON is one too;
- :func:`publish` sends the accepted events' wire form keyed by ``org_id`` through the app's
  :class:`~auditlogkit.producer.AuditProducer` (``send_raw``: its batching, its ``acks``) and returns once the broker
  acknowledged every one within ``timeout_s``; otherwise it raises 503 ``broker_unavailable`` with
  ``Retry-After`` (events acknowledged before are harmless on a retry: the consumer stores an ``event_id`` once).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import ClientDisconnect, Request

from auditlogkit.producer import AuditProducer
from auditlogkit.query_api.core.errors import ApiError, ClientGone
from auditlogkit.query_api.core.observability import INGEST_EVENTS
from auditlogkit.query_api.security.principal import ServicePrincipal
from auditlogkit.schemas.catalog import RESERVED_REASON, Catalog, is_reserved
from auditlogkit.schemas.event import EventError, parse_event

JSON = "application/json"
NDJSON = "application/x-ndjson"
MEDIA_TYPES = {JSON: False, NDJSON: True, "application/ndjson": True}  # media type -> one event per line
RETRY_AFTER_S = 5
_WHOLE_MESSAGE = frozenset({"message", "event"})  # EventError fields that name no field of the event
_REQUIRED = ("required over HTTP: the producer sets it once per event and keeps it on a retry (that makes a retry "
             "harmless); it is never filled in here")


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused event: its index among the non-blank lines, the field at fault (None: the whole line)."""

    index: int
    field: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


@dataclass(slots=True)
class Batch:
    """A parsed body: the accepted events' ``(org_id, wire bytes)`` and the rejections, in line order."""

    single: bool
    accepted: list[tuple[str, bytes]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def forbidden_only(self) -> bool:
        """Nothing valid and every rejection an org outside ``write_orgs`` (403 rather than 422)."""
        return not self.accepted and bool(self.rejected) and all(r.field == "org_id" and r.reason.startswith(
            _OUTSIDE) for r in self.rejected)


_OUTSIDE = "outside this token's write_orgs"


def media_type(content_type: str | None) -> bool:
    """Whether ``content_type`` is NDJSON (True) or one JSON event (False); 415 for anything else (also a charset
    other than UTF-8)."""
    mt, _, params = (content_type or "").partition(";")
    mt = mt.strip().lower()
    charset = next((v.strip().strip('"').lower() for k, _, v in (p.partition("=") for p in params.split(";"))
                    if k.strip().lower() == "charset"), "utf-8")
    if mt not in MEDIA_TYPES or charset not in ("utf-8", "utf8"):
        shown = f"{content_type!r}" if content_type else "none"
        raise ApiError(415, f"content type {shown} is not accepted: send {JSON} (one event) or {NDJSON} (one "
                            "event per line), UTF-8", code="unsupported_media_type")
    return MEDIA_TYPES[mt]


def too_large(what: str) -> ApiError:
    return ApiError(413, what, code="payload_too_large")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 once it would pass ``max_bytes`` (module contract)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, f"Content-Length {declared!r} is not a number", code="bad_request")
        if int(declared) > max_bytes:
            raise too_large(f"the body has {int(declared):,} bytes; at most {max_bytes:,} are accepted per request")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise too_large(f"the body is larger than {max_bytes:,} bytes, the most accepted per request")
    except ClientDisconnect:
        raise ClientGone() from None
    return bytes(body)


def _rejection(index: int, exc: EventError) -> Rejection:
    reason = exc.reason
    if exc.field in ("event_id", "occurred_at") and reason == "Field required":
        reason = _REQUIRED
    elif reason == "Field required":
        reason = "required"
    return Rejection(index, None if exc.field in _WHOLE_MESSAGE else exc.field, reason)


def _validate(index: int, data: bytes, service: ServicePrincipal, catalog: Catalog) -> tuple[str, bytes] | Rejection:
    """``(org_id, wire bytes)`` of a valid event this service may write, else its :class:`Rejection`."""
    try:
        ev = parse_event(data, catalog)
    except EventError as exc:
        return _rejection(index, exc)
    if is_reserved(ev.scope, ev.category):
        return Rejection(index, "category", RESERVED_REASON)
    if not service.may_write(ev.org_id):
        return Rejection(index, "org_id", f"{_OUTSIDE}: org_id {ev.org_id!r} is not one of "
                                          f"{', '.join(sorted(service.write_orgs)) or '(none)'}")
    return ev.org_id, ev.to_json_bytes()


def _not_json(r: Rejection) -> bool:
    return r.field is None and r.reason.startswith(("not valid JSON", "not UTF-8"))


_LINE = re.compile(rb"[^\n]+")


def split_lines(body: bytes, max_events: int) -> list[bytes]:
    """The non-blank lines of an NDJSON body (``\\n`` or ``\\r\\n``), stripped; 413 past ``max_events`` of them
    (a body of newlines only is never split into millions of empty strings)."""
    lines: list[bytes] = []
    for m in _LINE.finditer(body):
        ln = m.group().strip()
        if ln:
            lines.append(ln)
            if len(lines) > max_events:
                raise too_large(f"more than {max_events:,} events in one request (blank lines not counted)")
    return lines


def parse_body(body: bytes, ndjson: bool, service: ServicePrincipal, catalog: Catalog, max_events: int) -> Batch:
    """Events of ``body`` (module contract). CPU work: call it off the event loop (:func:`parse_off_loop`)."""
    batch = Batch(single=not ndjson)
    for i, data in enumerate(split_lines(body, max_events) if ndjson else [body]):
        out = _validate(i, data, service, catalog)
        if isinstance(out, Rejection):
            if not ndjson and _not_json(out):
                raise ApiError(400, f"the body is {out.reason}: send one event as a JSON object ({JSON}) or "
                                    f"one per line ({NDJSON})", code="bad_request")
            batch.rejected.append(out)
        else:
            batch.accepted.append(out)
    return batch


async def parse_off_loop(pool: ThreadPoolExecutor, body: bytes, ndjson: bool, service: ServicePrincipal,
                         catalog: Catalog, max_events: int) -> Batch:
    """:func:`parse_body` on ``pool`` (the app's ingest threads), so that the event loop keeps its turns."""
    return await asyncio.get_running_loop().run_in_executor(pool, parse_body, body, ndjson, service, catalog,
                                                            max_events)


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, code="broker_unavailable", headers={"Retry-After": str(RETRY_AFTER_S)})


def _quiet(fut: asyncio.Future[Any]) -> None:  # an ack that failed after we stopped waiting: not an unhandled error
    if not fut.cancelled():
        fut.exception()


async def publish(producer: AuditProducer | None, records: Sequence[tuple[str, bytes]], timeout_s: float,
                  sign: Callable[[bytes], list[tuple[str, bytes]]] | None = None) -> None:
    """Send ``records`` (``(org_id, wire bytes)``) and wait for every ack, or raise 503 (module contract).
    ``sign`` gives each message's headers (the publisher, :mod:`auditlogkit.server.provenance`)."""
    if producer is None:
        raise unavailable("this API is not connected to the broker yet; nothing was accepted")
    futures: list[asyncio.Future[Any]] = []
    try:
        async with asyncio.timeout(timeout_s):
            for n, (org_id, value) in enumerate(records, 1):
                futures.append(await producer.send_raw(value, org_id, sign(value) if sign is not None else None))
                if n % 500 == 0:
                    await asyncio.sleep(0)  # let other requests have the loop while a large batch is enqueued
            if futures:
                await asyncio.wait(futures)  # never cancels them: aiokafka owns these futures
        failed = next((f for f in futures if f.cancelled() or f.exception() is not None), None)
        if failed is not None:
            raise failed.exception() or RuntimeError("an acknowledgement was cancelled")
    except Exception as exc:
        for f in futures:
            f.add_done_callback(_quiet)
        why = "did not acknowledge them" if isinstance(exc, TimeoutError) else f"failed ({type(exc).__name__})"
        raise unavailable(f"the broker {why} within {timeout_s:g} s; nothing was accepted: send the same events "
                          "again later (their event_id makes a retry harmless)") from exc


def count(outcome: str, n: int) -> None:
    if n:
        INGEST_EVENTS.labels(outcome).inc(n)
