"""``/v1/events``: the filtered page, one event, and the streamed export (API.md)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from query_api import cursor as cursors
from query_api import events_read
from query_api.deps import CatalogDep, ExportPoolDep, ProducerDep, StoreDep
from query_api.errors import ApiError, ErrorBody, invalid
from query_api.export import MEDIA_TYPES, ExportStream, export_filename
from query_api.filters import Filters
from query_api.models import EventOut, EventPage
from query_api.observability import ROWS_EXPORTED
from query_api.scoping import ExportScope, ScopedFilters, TenantScope
from query_api.self_audit import build_event, publish

router = APIRouter(prefix="/v1", tags=["events"])
ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "no or invalid token"},
    403: {"model": ErrorBody, "description": "missing permission or a filter outside your scope"},
    422: {"model": ErrorBody, "description": "invalid parameter (the message names it and the valid values)"},
}


def _client(request: Request) -> tuple[str | None, str | None]:
    return (request.client.host if request.client else None), request.headers.get("user-agent")


@router.get("/events", response_model=EventPage, responses=ERRORS, summary="Filtered events, newest first")
async def list_events(
    request: Request, sq: ScopedFilters, filters: Filters, store: StoreDep, catalog: CatalogDep,
    producer: ProducerDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="page size, 1-1000")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> dict[str, object]:
    if cursor:
        ts, eid = cursors.decode(cursor)
        sq.after(ts, eid)
    data, last = await run_in_threadpool(events_read.list_page, store, sq, catalog, limit)
    described = filters.describe()
    if request.app.state.read_coalescer.first(sq.principal, described):
        ip, ua = _client(request)
        await publish(producer, build_event(sq.principal, "audit_log.list", filters=described, client_ip=ip,
                                            user_agent=ua, extra={"rows": len(data)}))
    return {"data": data, "next_cursor": cursors.encode(*last) if last else None}


@router.get("/events/export", responses={**ERRORS, 200: {"content": {"text/csv": {}, "application/x-ndjson": {}},
                                                         "description": "the file, streamed"}},
            response_class=StreamingResponse, summary="The whole filtered view as CSV or NDJSON (streamed)")
async def export_events(
    request: Request, sq: ExportScope, filters: Filters, store: StoreDep, catalog: CatalogDep,
    producer: ProducerDep, pool: ExportPoolDep,
    format: Annotated[Literal["csv", "ndjson"], Query(description="csv or ndjson")] = "csv",
) -> StreamingResponse:
    stream = ExportStream(store, sq, catalog, format, pool)
    await run_in_threadpool(stream.start)
    ip, ua = _client(request)
    await publish(producer, build_event(sq.principal, "audit_log.export", filters=filters.describe(), client_ip=ip,
                                        user_agent=ua, extra={"format": format}))

    def body() -> object:
        try:
            yield from stream
        finally:
            ROWS_EXPORTED.labels(format).inc(stream.rows)

    name = export_filename(filters, format)
    return StreamingResponse(body(), media_type=MEDIA_TYPES[format],  # type: ignore[arg-type]
                             headers={"Content-Disposition": f'attachment; filename="{name}"',
                                      "Cache-Control": "no-store"})


@router.get("/events/{event_id}", response_model=EventOut,
            responses={**ERRORS, 404: {"model": ErrorBody, "description": "no such event in your scope"}},
            summary="One event with its full detail")
async def get_event(
    sq: TenantScope, store: StoreDep, catalog: CatalogDep,
    event_id: Annotated[str, Path(description="event UUID", max_length=64)],
) -> dict[str, object]:
    try:
        eid = uuid.UUID(event_id)
    except ValueError:
        raise invalid("event_id", f"event_id {event_id!r} is not a UUID") from None
    ev = await run_in_threadpool(events_read.get_event, store, sq, catalog, eid)
    if ev is None:
        raise ApiError(404, f"no event {eid} in your scope", field="event_id")
    return ev
