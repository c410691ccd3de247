"""``POST /v1/ingest``: events over HTTP for services without a Kafka client (API.md "Writing events over HTTP").

A service token (``role: service``, ``audit:write``, ``write_orgs``) posts one event or an NDJSON batch; the events
are validated off the event loop, the valid ones of its orgs published through the app's ``ingest_producer``, and
the answer waits for the broker's acknowledgement of every one (:mod:`auditlogkit.query_api.core.ingest`):
``202 {"accepted", "rejected"}``; nothing valid: 422 (403 when every event names an org outside ``write_orgs``)
with the error object and the same ``rejected`` list; broker unreachable: 503 ``broker_unavailable`` with
``Retry-After``, nothing reported accepted.
"""

from __future__ import annotations

import time
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from auditlogkit.query_api.core import ingest
from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.deps import (
    CatalogDep,
    IngestPoolDep,
    IngestProducerDep,
    IngestSlotsDep,
    ServerKeysDep,
    SettingsDep,
    WritePrincipal,
)
from auditlogkit.query_api.models import ErrorBody, IngestRefused, IngestResult
from auditlogkit.server.logs import get_logger
from auditlogkit.server.provenance import http as publisher_http
from auditlogkit.server.provenance import signed_headers

log = get_logger("auditlogkit.query_api.routes.ingest")
router = APIRouter(prefix="/v1", tags=["ingest"])

_EVENT_DOC = ("One event of the v1 contract (EVENT.md; JSON Schema: schemas/event.schema.json), event_id and "
              "occurred_at included.")
_BODY = {"requestBody": {"required": True, "content": {
    ingest.JSON: {"schema": {"type": "object", "description": _EVENT_DOC}},
    ingest.NDJSON: {"schema": {"type": "string", "description": "One event per line (at most "
                                                              "api_ingest_max_events, blank lines ignored)."}},
}}}
_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "a single-event body that is not JSON"},
    401: {"model": ErrorBody, "description": "no or invalid token"},
    403: {"model": IngestRefused, "description": "not a service token with audit:write, or every event names an org "
                                                 "outside the token's write_orgs"},
    413: {"model": ErrorBody, "description": "more than api_ingest_max_events events or api_ingest_max_bytes bytes"},
    415: {"model": ErrorBody, "description": "neither application/json nor application/x-ndjson"},
    422: {"model": IngestRefused, "description": "no valid event: the rejected ones with their reasons"},
    429: {"model": ErrorBody, "description": "ingest rate limit of this service reached, or too many of its (or the "
                                             "server's) requests in progress (see Retry-After)"},
    503: {"model": ErrorBody, "description": "the broker did not acknowledge (broker_unavailable, see Retry-After)"},
}


@router.post("/ingest", status_code=202, response_model=IngestResult, responses=_RESPONSES, openapi_extra=_BODY,
             summary="Publish events (one JSON event, or NDJSON) for a service without a Kafka client")
async def ingest_events(request: Request, service: WritePrincipal, settings: SettingsDep, catalog: CatalogDep,
                        keys: ServerKeysDep, slots: IngestSlotsDep, pool: IngestPoolDep,
                        producer: IngestProducerDep) -> JSONResponse:
    t0 = time.perf_counter()
    slot = None
    try:
        ndjson = ingest.media_type(request.headers.get("content-type"))
        slot = slots.take(service.as_caller())  # before the body is read: bounds memory
        body = await ingest.read_body(request, settings.api_ingest_max_bytes)
        batch = await ingest.parse_off_loop(pool, body, ndjson, service, catalog, settings.api_ingest_max_events)
        rejected = [r.as_dict() for r in batch.rejected]
        ingest.count("rejected", len(rejected))
        if not batch.accepted:
            return _refused(service.sub, batch, rejected)
        try:
            await ingest.publish(producer, batch.accepted, settings.api_ingest_ack_timeout_seconds,
                                 sign=partial(signed_headers, keys, publisher_http(service.sub)))
        except ApiError:
            ingest.count("unavailable", len(batch.accepted))
            raise
    except ApiError as exc:
        log.warning("ingest.refused", sub=service.sub, status=exc.status, code=exc.code, reason=exc.message)
        raise
    finally:
        if slot is not None:
            slot.release()
    ingest.count("accepted", len(batch.accepted))
    log.info("ingest.accepted", sub=service.sub, accepted=len(batch.accepted), rejected=len(rejected),
             bytes=len(body), ms=round((time.perf_counter() - t0) * 1000, 1))
    return JSONResponse({"accepted": len(batch.accepted), "rejected": rejected}, status_code=202)


def _refused(sub: str, batch: ingest.Batch, rejected: list[dict[str, object]]) -> JSONResponse:
    if not batch.rejected:
        status, code, message = 422, "invalid_event", "the body holds no event (only blank lines)"
    elif batch.forbidden_only:
        status, code = 403, "forbidden"
        message = "this token may not write for the org of any event in the body (see rejected)"
    else:
        status, code = 422, "invalid_event"
        first = batch.rejected[0]
        what = f"{first.field + ': ' if first.field else ''}{first.reason}"
        message = (f"the event is invalid: {what}" if batch.single else
                   f"none of the {len(batch.rejected):,} events is valid (see rejected; index {first.index}: {what})")
    field = batch.rejected[0].field if batch.single and batch.rejected else None
    log.warning("ingest.refused", sub=sub, status=status, code=code, rejected=len(rejected))
    return JSONResponse({"error": {"code": code, "message": message, "field": field}, "rejected": rejected},
                        status_code=status)
