"""``/v1/events/stream``: the live tail as Server-Sent Events (API.md "Live tail").

Contract: the list's filters and scoping (``start``/``end`` apply only when given: the stream has no default
period); recorded (``audit_log.tail``, once per stream) before anything is sent, or refused with 503; limited per
caller and in total (429); ``retry`` and a ``: live`` comment at once, then the events stored after the stream
opened (or after ``Last-Event-ID``), oldest first, and a heartbeat comment at least every
``api_tail_heartbeat_seconds``. A client that stops reading for ``api_export_stall_seconds``, or falls
``api_tail_backlog_events`` behind, has its stream ended, after an id-only message (``id: <position>``) that
moves its ``Last-Event-ID`` to where it resumes without loss. So does the stream of a token that expires (at its
``exp`` plus ``jwt_leeway_seconds``): its client resumes with a new token, never past the old one's life.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import MappingProxyType
from typing import Annotated

from fastapi import APIRouter, Header, Request

from query_api import tail_position
from query_api.auth import ReadPrincipal
from query_api.deps import AuditorDep, CatalogDep, Filters, SettingsDep, TailHubDep, TailSlotsDep
from query_api.errors import ERRORS, invalid
from query_api.filters import EventFilters
from query_api.scoping import ScopedQuery
from query_api.streaming import BoundedStreamingResponse
from query_api.tail_position import Position

router = APIRouter(prefix="/v1", tags=["events"])
RETRY_MS = 3000


def open_ended(filters: EventFilters, request: Request) -> EventFilters:
    """``filters`` without the default period: ``start``/``end`` only when the request gave them."""
    given = request.query_params
    return EventFilters(MappingProxyType({k: v for k, v in filters.values.items()
                                          if k not in ("start", "end") or given.get(k)}))


@router.get("/events/stream", responses={**ERRORS, 200: {"content": {"text/event-stream": {}},
                                                         "description": "Server-Sent Events, oldest first"}},
            response_class=BoundedStreamingResponse, summary="Newly stored events as they arrive (SSE)")
async def stream_events(
    request: Request, principal: ReadPrincipal, filters: Filters, catalog: CatalogDep, hub: TailHubDep,
    slots: TailSlotsDep, auditor: AuditorDep, settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=200_000,
                                                description="resume after this event (the id of an SSE event)")] = None,
) -> BoundedStreamingResponse:
    f = open_ended(filters, request)
    sq = ScopedQuery(principal).with_filters(f, catalog)
    since: Position | None = None
    if last_event_id:
        try:
            since = tail_position.decode(last_event_id.strip(), hub.topic)
        except ValueError as exc:
            raise invalid("Last-Event-ID", f"Last-Event-ID is not a position of this audit log ({exc})") from None
    slot = slots.take(principal)
    try:
        await auditor.record(request, principal, "audit_log.tail", filters=f.describe(),
                             extra={"resumed": since is not None})
        ends_at = None if principal.expires_at is None else principal.expires_at + settings.jwt_leeway_seconds
        sub, start = await hub.subscribe(sq, ends_at)
    except BaseException:
        slot.release()
        raise

    async def frames() -> AsyncIterator[bytes]:
        yield f"retry: {RETRY_MS}\n: live\n\n".encode()
        sub.resume = dict(start)
        if since is not None:
            sub.resume = dict(since)
            async for page, after in hub.catch_up(sq, since, start):
                sub.resume = after
                yield page
            sub.resume = tail_position.highest(since, start)
            sub.floor = {p: o for p, o in since.items() if o > start.get(p, -1)}
        while True:
            waiting = await sub.next_chunk(hub.topic, settings.api_tail_heartbeat_seconds)
            if waiting is None:  # overrun, shutdown or expired token: an id-only message says where to resume
                yield b"id: " + tail_position.encode(sub.resume, hub.topic).encode("ascii") + b"\n\n"
                return
            yield waiting or b": hb\n\n"

    async def on_end(outcome: str) -> None:
        hub.unsubscribe(sub)
        slot.release()

    return BoundedStreamingResponse(frames(), stall_s=settings.api_export_stall_seconds, on_end=on_end,
                                    media_type="text/event-stream",
                                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
