"""``/v1/streams``: an organization's log streams (STREAMS.md), managed by its owner.

Contract:
- org owners with ``audit:stream`` only (:data:`~auditlogkit.query_api.deps.StreamPrincipal`: no token 401, a service token, a
  workspace admin or an owner without the permission 403); the org is the token's, never a parameter, and a stream
  id of another org is 404 like an unknown one;
- ``POST /v1/streams`` (201), ``GET /v1/streams``, ``GET /v1/streams/{id}``, ``PATCH /v1/streams/{id}`` (``name``,
  ``state`` active/paused, ``filters``, ``destination``: fields or credentials), ``DELETE /v1/streams/{id}`` (204),
  ``POST /v1/streams/{id}/test`` (one synthetic event, not stored: the destination's reply). A stream is shown
  with ``state``, ``delivered``, ``lag_seconds``, ``last_delivered_at`` and ``last_error``; its secrets never (masked,
  :meth:`~auditlogkit.query_api.streams.model.Stream.public`), neither in an answer nor in a log line or an audit event;
- what the owner gives is checked first (:mod:`auditlogkit.query_api.streams.config`: 422 naming the field, e.g.
  ``destination.url``); then every change (create, update, delete, test) is recorded as an ``audit_log.stream_*``
  event (target: the stream) and only then made: when the record cannot be published the answer is 503
  ``audit_unavailable`` and nothing changed (as for reads, a refused change may appear as recorded, never the
  reverse). Reading the streams' configuration is not recorded (it holds no event);
- the store calls run on the API's query threads (:class:`~auditlogkit.query_api.core.query_runner.QueryRunner`), a change
  without the client's cancellation (it is made whole or not at all); without a streams key: 503
  ``streams_unavailable`` (:data:`~auditlogkit.query_api.deps.StreamsDep`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response

from auditlogkit.query_api.core.errors import ApiError, invalid
from auditlogkit.query_api.core.query_runner import QueryRunner
from auditlogkit.query_api.deps import AuditorDep, RunnerDep, SettingsDep, StreamPrincipal, StreamsDep
from auditlogkit.query_api.models import ERRORS, ErrorBody, StreamIn, StreamOut, StreamPage, StreamPatch, StreamTestOut
from auditlogkit.query_api.security.principal import Principal
from auditlogkit.query_api.security.self_audit import ReadAuditor
from auditlogkit.query_api.streams.config import (
    DestinationConfig,
    StreamConfigError,
    check_destination,
    check_filters,
    check_name,
    check_start,
)
from auditlogkit.query_api.streams.deliverer import send_test
from auditlogkit.query_api.streams.keys import StreamsKeyError
from auditlogkit.query_api.streams.model import Stream
from auditlogkit.query_api.streams.store import StreamStore

router = APIRouter(prefix="/v1/streams", tags=["streams"])
T = TypeVar("T")
RESPONSES: dict[int | str, dict[str, object]] = {
    **ERRORS, 404: {"model": ErrorBody, "description": "no such stream in your organization"}}
TARGET = "audit_stream"


def _not_found() -> ApiError:
    return ApiError(404, "no such stream in your organization")


async def _call(runner: QueryRunner, request: Request | None, p: Principal, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a query thread, its configuration errors as 422."""
    try:
        return await runner.run(request, fn, *args, caller=p)
    except StreamConfigError as exc:
        raise invalid(exc.field, exc.message) from None
    except StreamsKeyError as exc:
        raise invalid("destination", str(exc)) from None


def _shown(repo: StreamStore, stream: Stream) -> dict[str, Any]:
    """The stream as the API shows it, with its lag (a read of the events)."""
    return {**stream.public(), "lag_seconds": round(repo.lag_seconds(stream), 3)}


def _destination_detail(dest: DestinationConfig) -> dict[str, Any]:
    """What an audit event says of a destination: type and plain fields, the names of its secrets (never values)."""
    return {"type": dest.type, **dest.fields, "secrets": sorted(dest.secrets)}


async def _record(auditor: ReadAuditor, request: Request, p: Principal, action: str, stream_id: str, name: str,
                  extra: dict[str, Any]) -> None:
    await auditor.record(request, p, action, extra={"stream_id": stream_id, **extra}, target_id=stream_id,
                         target_type=TARGET, target_name=name)


@router.post("", status_code=201, response_model=StreamOut, responses=ERRORS,
             summary="Create a log stream: your organization's events, delivered to your own system")
async def create_stream(request: Request, body: StreamIn, p: StreamPrincipal, repo: StreamsDep, runner: RunnerDep,
                        auditor: AuditorDep) -> dict[str, Any]:
    def check() -> tuple[str, DestinationConfig, dict[str, Any]]:
        start = check_start(body.start, repo.retention_days)
        return (check_name(body.name), check_destination(body.destination, repo.allow, repo.resolver),
                {"filters": check_filters(body.filters, repo.catalog),
                 "start": start.isoformat().replace("+00:00", "Z") if start else "now"})

    name, dest, more = await _call(runner, None, p, check)
    sid = str(uuid.uuid4())
    await _record(auditor, request, p, "audit_log.stream_create", sid, name,
                  {"destination": _destination_detail(dest), **more})

    def create() -> dict[str, Any]:
        return _shown(repo, repo.create(p.org_id, body.name, body.destination, body.filters, body.start,
                                        stream_id=sid))

    return await _call(runner, None, p, create)


@router.get("", response_model=StreamPage, responses=ERRORS, summary="Your organization's log streams and their status")
async def list_streams(request: Request, p: StreamPrincipal, repo: StreamsDep, runner: RunnerDep) -> dict[str, Any]:
    def read() -> list[dict[str, Any]]:
        return [_shown(repo, s) for s in repo.list(p.org_id)]

    return {"data": await _call(runner, request, p, read)}


@router.get("/{stream_id}", response_model=StreamOut, responses=RESPONSES, summary="One log stream and its status")
async def get_stream(request: Request, stream_id: uuid.UUID, p: StreamPrincipal, repo: StreamsDep,
                     runner: RunnerDep) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        s = repo.get(p.org_id, str(stream_id))
        return None if s is None else _shown(repo, s)

    shown = await _call(runner, request, p, read)
    if shown is None:
        raise _not_found()
    return shown


@router.patch("/{stream_id}", response_model=StreamOut, responses=RESPONSES,
              summary="Pause or resume a log stream, or change its name, filters or destination (credentials)")
async def update_stream(request: Request, stream_id: uuid.UUID, body: StreamPatch, p: StreamPrincipal,
                        repo: StreamsDep, runner: RunnerDep, auditor: AuditorDep) -> dict[str, Any]:
    sid = str(stream_id)
    if body.name is None and body.state is None and body.filters is None and body.destination is None:
        raise invalid("body", "nothing to change: give some of name, state, filters, destination")

    def check() -> tuple[Stream, dict[str, Any]] | None:
        cur = repo.get(p.org_id, sid)
        if cur is None:
            return None
        changes: dict[str, Any] = {}
        if body.name is not None:
            changes["name"] = check_name(body.name)
        if body.state is not None:
            changes["state"] = body.state
        if body.filters is not None:
            changes["filters"] = check_filters(body.filters, repo.catalog)
        if body.destination is not None:
            dest = check_destination(body.destination, repo.allow, repo.resolver, current=cur.destination)
            changes["destination"] = {**_destination_detail(dest), "secrets_given": sorted(
                k for k, v in body.destination.items() if k in dest.secrets and v not in (None, ""))}
        return cur, changes

    found = await _call(runner, None, p, check)
    if found is None:
        raise _not_found()
    cur, changes = found
    await _record(auditor, request, p, "audit_log.stream_update", sid, changes.get("name", cur.name),
                  {"changes": changes, "previous_state": cur.state})

    def update() -> dict[str, Any] | None:
        s = repo.update(p.org_id, sid, name=body.name, state=body.state, filters=body.filters,
                        destination=body.destination)
        return None if s is None else _shown(repo, s)

    shown = await _call(runner, None, p, update)
    if shown is None:  # deleted in between
        raise _not_found()
    return shown


@router.delete("/{stream_id}", status_code=204, response_class=Response, responses=RESPONSES,
               summary="Delete a log stream (its deliverer stops within a lease period)")
async def delete_stream(request: Request, stream_id: uuid.UUID, p: StreamPrincipal, repo: StreamsDep,
                        runner: RunnerDep, auditor: AuditorDep) -> Response:
    sid = str(stream_id)
    cur = await _call(runner, None, p, repo.get, p.org_id, sid)
    if cur is None:
        raise _not_found()
    await _record(auditor, request, p, "audit_log.stream_delete", sid, cur.name,
                  {"destination": _destination_detail(cur.destination), "delivered": (cur.public())["delivered"]})
    if not await _call(runner, None, p, repo.delete, p.org_id, sid):
        raise _not_found()
    return Response(status_code=204)


@router.post("/{stream_id}/test", response_model=StreamTestOut, responses=RESPONSES,
             summary="Send one synthetic event (not stored) to the stream's destination: its reply")
async def test_stream(request: Request, stream_id: uuid.UUID, p: StreamPrincipal, repo: StreamsDep,
                      runner: RunnerDep, auditor: AuditorDep, settings: SettingsDep) -> dict[str, Any]:
    sid = str(stream_id)
    cur = await _call(runner, None, p, repo.get, p.org_id, sid)
    if cur is None:
        raise _not_found()
    if cur.secrets_error:
        raise invalid("destination", f"the stream's secrets do not open with this server's key: give its credentials "
                                     f"again ({cur.secrets_error})")
    await _record(auditor, request, p, "audit_log.stream_test", sid, cur.name,
                  {"destination": _destination_detail(cur.destination)})
    outcome = await send_test(repo, sid, p.org_id, timeout=settings.streams_request_timeout_seconds,
                              resolver=repo.resolver)
    if outcome is None:
        raise _not_found()
    return {"delivered": outcome.delivered, "http_status": outcome.http_status, "message": outcome.message}
