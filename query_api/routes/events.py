"""Every ``/v1/events`` route (API.md): the filtered page, one event, the streamed export and the live tail.

Every call is recorded before its data is sent (:mod:`auditlogkit.query_api.security.self_audit`), or refused with 503. The
detail's ``event_id`` is a UUID in the path itself (``{event_id:uuid}``), so ``/v1/events/export`` and
``/v1/events/stream`` are never taken for an event id whatever the order of the routes; a malformed id is the 422
of :mod:`auditlogkit.query_api.core.errors`.

``/v1/events/stream``, the live tail as Server-Sent Events (API.md "Live tail"): the list's filters and scoping
(``start``/``end`` apply only when given: the stream has no default period); a ``Last-Event-ID`` this server did not issue for this topic (forged, edited, another server secret, the
old unsigned form) is ``400 invalid_position`` and reads nothing; limited per caller and in total (429);
``retry`` and a ``: live`` comment at once, then the events stored after the stream opened (or after
``Last-Event-ID``), oldest first, and a heartbeat comment at least every ``api_tail_heartbeat_seconds``. A
client that stops reading for ``api_export_stall_seconds``, or falls ``api_tail_backlog_events`` behind, has its
stream ended, after an id-only message (``id: <position>``) that moves its ``Last-Event-ID`` to where it resumes
without loss. So does the stream of a token that expires (at its ``exp`` plus ``jwt_leeway_seconds``): its
client resumes with a new token, never past the old one's life.

Self-audit, ``audit_log.tail`` events with the filters and a ``phase`` (:class:`Delivered` says the rest):
``started`` before anything is sent (or 503, nothing sent); ``progress`` with the events handed over since the
stream's previous event, before more are handed over once ``api_tail_audit_seconds`` have passed since it (or at
once while the recorder is failing), and after such a period while some are not yet on record; ``end`` with its
``outcome`` when the stream ends. A ``progress`` event that cannot be published ends the stream (outcome
``audit_unavailable``) before the events it was to cover are sent, after the id-only message.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request

from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.core.observability import ROWS_EXPORTED
from auditlogkit.query_api.core.query_runner import store_error
from auditlogkit.query_api.core.streaming import BoundedStreamingResponse
from auditlogkit.query_api.deps import (
    AuditorDep,
    CatalogDep,
    ExportPoolDep,
    ExportScope,
    ExportSlotsDep,
    Filters,
    PageWindowDep,
    ReadPrincipal,
    RunnerDep,
    ScopedFilters,
    ServerKeysDep,
    SettingsDep,
    StoreDep,
    TailHubDep,
    TailSlotsDep,
    TenantScope,
)
from auditlogkit.query_api.models import ERRORS, ErrorBody, EventOut, EventPage
from auditlogkit.query_api.read import cursor as cursors
from auditlogkit.query_api.read import events as events_read
from auditlogkit.query_api.read import recent, tail_position
from auditlogkit.query_api.read.export import MEDIA_TYPES, ExportStream, export_filename
from auditlogkit.query_api.read.filters import EventFilters
from auditlogkit.query_api.read.tail import CatchUpPage
from auditlogkit.query_api.read.tail_position import Position
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.query_api.security.self_audit import SelfAuditState
from auditlogkit.schemas.event import as_utc

router = APIRouter(prefix="/v1", tags=["events"])
RETRY_MS = 3000


@router.get("/events", response_model=EventPage, summary="Filtered events, newest first",
            responses={**ERRORS, 400: {"model": ErrorBody,
                                       "description": "a cursor this server did not issue (invalid_cursor)"}})
async def list_events(
    request: Request, sq: ScopedFilters, filters: Filters, catalog: CatalogDep, runner: RunnerDep,
    auditor: AuditorDep, settings: SettingsDep, keys: ServerKeysDep, window: PageWindowDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="page size, 1-1000")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page, unchanged (anything "
                                                    "else: 400 invalid_cursor)")] = None,
) -> dict[str, object]:
    after = cursors.decode(cursor, keys) if cursor else None
    if after is not None:
        sq.after(*after)
    data, last = await runner.run(request, recent.read_page, window, runner.store, sq, filters, catalog, limit, after,
                                  settings.api_list_detail_max_bytes)
    await auditor.record_list(request, sq.principal, filters.describe(), len(data), page=bool(cursor))
    return {"data": data, "next_cursor": cursors.encode(*last, keys) if last else None}


@router.get("/events/export", responses={**ERRORS, 200: {"content": {"text/csv": {}, "application/x-ndjson": {}},
                                                         "description": "the file, streamed"}},
            response_class=BoundedStreamingResponse,
            summary="The whole filtered view as CSV or NDJSON (streamed)")
async def export_events(
    request: Request, sq: ExportScope, filters: Filters, store: StoreDep, catalog: CatalogDep,
    auditor: AuditorDep, pool: ExportPoolDep, slots: ExportSlotsDep, settings: SettingsDep,
    format: Annotated[Literal["csv", "ndjson"], Query(description="csv or ndjson")] = "csv",
) -> BoundedStreamingResponse:
    slot = slots.take(sq.principal)
    described = filters.describe()
    try:
        await auditor.record(request, sq.principal, "audit_log.export", filters=described,
                             extra={"format": format, "phase": "started"})
        stream = ExportStream(store, sq, catalog, format, pool, timeout_s=settings.api_query_timeout_seconds,
                              max_memory=settings.api_query_max_memory)
        try:
            await stream.start()
        except Exception as exc:
            err = store_error(exc, settings.api_query_timeout_seconds)
            if err is None:
                raise
            raise err from None
    except BaseException:
        slot.release()
        raise

    async def on_end(outcome: str) -> None:
        slot.release()
        await stream.aclose()
        ROWS_EXPORTED.labels(format).inc(stream.rows)
        with contextlib.suppress(ApiError):  # the export's outcome and size; the read itself is on record
            await auditor.record(request, sq.principal, "audit_log.export", filters=described,
                                 extra={"format": format, "phase": outcome, "rows": stream.rows})

    name = export_filename(filters, format)
    return BoundedStreamingResponse(stream.__aiter__(), stall_s=settings.api_export_stall_seconds, on_end=on_end,
                                    media_type=MEDIA_TYPES[format],
                                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                                             "Cache-Control": "no-store"})


@router.get("/events/{event_id:uuid}", response_model=EventOut,
            responses={**ERRORS, 404: {"model": ErrorBody, "description": "no such event in your scope"}},
            summary="One event with its full detail")
async def get_event(
    request: Request, sq: TenantScope, catalog: CatalogDep, runner: RunnerDep, auditor: AuditorDep,
    event_id: Annotated[uuid.UUID, Path(description="event UUID")],
) -> dict[str, object]:
    ev = await runner.run(request, events_read.get_event, runner.store, sq, catalog, event_id)
    await auditor.record(request, sq.principal, "audit_log.read", target_id=str(event_id),
                         extra={"kind": "event", "found": ev is not None})
    if ev is None:
        raise ApiError(404, f"no event {event_id} in your scope", field="event_id")
    return ev


def open_ended(filters: EventFilters, request: Request) -> EventFilters:
    """``filters`` without the default period: ``start``/``end`` only when the request gave them."""
    given = request.query_params
    return EventFilters(MappingProxyType({k: v for k, v in filters.values.items()
                                          if k not in ("start", "end") or given.get(k)}))


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else as_utc(ts).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Delivered:
    """What one stream handed its client, as its ``audit_log.tail`` events report it (:meth:`detail`)."""

    resumed: bool
    rows: int = 0
    recorded: int = 0
    caught_up_rows: int = 0
    caught_up_from: datetime | None = None
    caught_up_to: datetime | None = None

    @property
    def unrecorded(self) -> int:
        return self.rows - self.recorded

    def plus(self, rows: int) -> Delivered:
        return replace(self, rows=self.rows + rows)

    def plus_catch_up(self, page: CatchUpPage) -> Delivered:
        return replace(self, rows=self.rows + page.rows, caught_up_rows=self.caught_up_rows + page.rows,
                       caught_up_from=min(t for t in (self.caught_up_from, page.first_at) if t is not None),
                       caught_up_to=max(t for t in (self.caught_up_to, page.last_at) if t is not None))

    def on_record(self) -> Delivered:
        return replace(self, recorded=self.rows)

    def detail(self, phase: str, **more: Any) -> dict[str, Any]:
        """``rows``: events since the stream's previous event (a stream's ``rows`` add up to what it delivered),
        ``rows_total``: since it opened; a resumed stream adds ``caught_up_rows`` and the earliest / latest
        ``occurred_at`` among them (``caught_up_from`` / ``caught_up_to``, null before the first)."""
        out: dict[str, Any] = {"phase": phase, "resumed": self.resumed, "rows": self.unrecorded,
                               "rows_total": self.rows, **more}
        if self.resumed:
            out.update(caught_up_rows=self.caught_up_rows, caught_up_from=_iso(self.caught_up_from),
                       caught_up_to=_iso(self.caught_up_to))
        return out


RESPONSES: dict[int | str, dict[str, object]] = {
    **ERRORS,
    200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events, oldest first"},
    400: {"model": ErrorBody, "description": "a Last-Event-ID this server did not issue (invalid_position)"},
}


@router.get("/events/stream", responses=RESPONSES, response_class=BoundedStreamingResponse,
            summary="Newly stored events as they arrive (SSE)")
async def stream_events(
    request: Request, principal: ReadPrincipal, filters: Filters, catalog: CatalogDep, hub: TailHubDep,
    slots: TailSlotsDep, auditor: AuditorDep, settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=200_000,
                                                description="resume after this event (the id of an SSE event, "
                                                            "unchanged; anything else: 400)")] = None,
) -> BoundedStreamingResponse:
    f = open_ended(filters, request)
    sq = ScopedQuery(principal).with_filters(f, catalog)
    since: Position | None = None
    if last_event_id:
        try:
            since = hub.parse_position(last_event_id.strip())
        except ValueError as exc:
            raise ApiError(400, f"Last-Event-ID is not a position this server issued for this audit log ({exc}); "
                           "resume with the id of an event it sent, unchanged, or open a new stream without it",
                           field="Last-Event-ID", code="invalid_position") from None
    described = f.describe()
    every = settings.api_tail_audit_seconds
    delivered = Delivered(resumed=since is not None)
    next_at = time.monotonic() + every
    ended_by = "complete"  # why the stream ended by itself (overrun, expired, shutdown, audit_unavailable)

    async def record(phase: str, state: Delivered, **more: Any) -> None:
        await auditor.record(request, principal, "audit_log.tail", filters=described, extra=state.detail(phase, **more))

    slot = slots.take(principal)
    try:
        await auditor.record(request, principal, "audit_log.tail", filters=described,
                             extra={"phase": "started", "resumed": since is not None})
        ends_at = None if principal.expires_at is None else principal.expires_at + settings.jwt_leeway_seconds
        sub, start = await hub.subscribe(sq, ends_at)
    except BaseException:
        slot.release()
        raise

    async def hand_over(state: Delivered) -> bool:
        """Before the client gets what makes :data:`delivered` into ``state``: a ``progress`` event first when one
        is due (or the recorder is failing). False: it could not be published, nothing more may be sent."""
        nonlocal delivered, next_at
        if time.monotonic() >= next_at or auditor.state == SelfAuditState.FAILING:
            try:
                await record("progress", state)
            except ApiError:
                return False
            state = state.on_record()
            next_at = time.monotonic() + every
        delivered = state
        return True

    def resume_id() -> bytes:
        """An id-only message: moves the client's Last-Event-ID to where it resumes without loss."""
        return b"id: " + hub.position_id(sub.resume).encode("ascii") + b"\n\n"

    async def frames() -> AsyncIterator[bytes]:
        nonlocal ended_by
        yield f"retry: {RETRY_MS}\n: live\n\n".encode()
        sub.resume = dict(start)
        if since is not None:
            sub.resume = dict(since)
            async for page in hub.catch_up(sq, since, start):
                if not await hand_over(delivered.plus_catch_up(page)):
                    ended_by = "audit_unavailable"
                    yield resume_id()
                    return
                sub.resume = page.after
                yield page.wire
            sub.resume = tail_position.highest(since, start)
            sub.floor = {p: o for p, o in since.items() if o > start.get(p, -1)}
        while True:
            wait_s = settings.api_tail_heartbeat_seconds
            if delivered.unrecorded:  # wake up when their record is due
                wait_s = max(0.05, min(wait_s, next_at - time.monotonic()))
            before, sent = dict(sub.resume), sub.sent
            waiting = await sub.next_chunk(hub.position_id, wait_s)
            if waiting is None:  # overrun, shutdown or expired token: an id-only message says where to resume
                expired = sub.ends_at is not None and time.time() >= sub.ends_at
                ended_by = "overrun" if sub.overrun else "expired" if expired else "shutdown"
                yield resume_id()
                return
            if waiting:
                if not await hand_over(delivered.plus(sub.sent - sent)):
                    sub.resume = before  # this chunk is not sent: resume before it
                    ended_by = "audit_unavailable"
                    yield resume_id()
                    return
                yield waiting
                continue
            if delivered.unrecorded and time.monotonic() >= next_at and not await hand_over(delivered):
                ended_by = "audit_unavailable"
                yield resume_id()
                return
            yield b": hb\n\n"

    async def on_end(outcome: str) -> None:
        hub.unsubscribe(sub)
        slot.release()
        with contextlib.suppress(ApiError):  # the stream's end and last rows; what it sent before is on record
            await record("end", delivered, outcome=ended_by if outcome == "complete" else outcome)

    return BoundedStreamingResponse(frames(), stall_s=settings.api_export_stall_seconds, on_end=on_end,
                                    media_type="text/event-stream",
                                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
