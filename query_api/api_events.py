"""``/v1/events``: the filtered page, one event, and the streamed export (API.md).

Every call is recorded before its data is sent (:mod:`query_api.self_audit`), or refused with 503.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request

from query_api import cursor as cursors
from query_api import events_read
from query_api.deps import (
    AuditorDep,
    CatalogDep,
    ExportPoolDep,
    ExportScope,
    ExportSlotsDep,
    Filters,
    RunnerDep,
    ScopedFilters,
    ServerKeysDep,
    SettingsDep,
    StoreDep,
    TenantScope,
)
from query_api.errors import ERRORS, ApiError, ErrorBody, invalid
from query_api.export import MEDIA_TYPES, ExportStream, export_filename
from query_api.models import EventOut, EventPage
from query_api.observability import ROWS_EXPORTED
from query_api.query_runner import store_error
from query_api.streaming import BoundedStreamingResponse

router = APIRouter(prefix="/v1", tags=["events"])


@router.get("/events", response_model=EventPage, summary="Filtered events, newest first",
            responses={**ERRORS, 400: {"model": ErrorBody,
                                       "description": "a cursor this server did not issue (invalid_cursor)"}})
async def list_events(
    request: Request, sq: ScopedFilters, filters: Filters, catalog: CatalogDep, runner: RunnerDep,
    auditor: AuditorDep, settings: SettingsDep, keys: ServerKeysDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="page size, 1-1000")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page, unchanged (anything "
                                                    "else: 400 invalid_cursor)")] = None,
) -> dict[str, object]:
    if cursor:
        ts, eid = cursors.decode(cursor, keys)
        sq.after(ts, eid)
    data, last = await runner.run(request, events_read.list_page, runner.store, sq, catalog, limit,
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


@router.get("/events/{event_id}", response_model=EventOut,
            responses={**ERRORS, 404: {"model": ErrorBody, "description": "no such event in your scope"}},
            summary="One event with its full detail")
async def get_event(
    request: Request, sq: TenantScope, catalog: CatalogDep, runner: RunnerDep, auditor: AuditorDep,
    event_id: Annotated[str, Path(description="event UUID", max_length=64)],
) -> dict[str, object]:
    try:
        eid = uuid.UUID(event_id)
    except ValueError:
        raise invalid("event_id", f"event_id {event_id!r} is not a UUID") from None
    ev = await runner.run(request, events_read.get_event, runner.store, sq, catalog, eid)
    await auditor.record(request, sq.principal, "audit_log.read", target_id=str(eid),
                         extra={"kind": "event", "found": ev is not None})
    if ev is None:
        raise ApiError(404, f"no event {eid} in your scope", field="event_id")
    return ev
