"""Every response model of the API (they shape ``/openapi.json``). Request parameters live in ``read/filters.py``.

Contract: families: events (:class:`EventOut`, :class:`EventPage`), autocomplete (:class:`ActorOut`,
:class:`ActorPage`), stats (:class:`StatsOut`, its parameter types :data:`Interval` and :data:`GroupBy`), integrity
(:class:`IntegrityOut`, :class:`ConflictPage`), catalog (:class:`CatalogOut`), health (:class:`Health`), ingest
(:class:`IngestResult`, :class:`IngestRefused`), log streams (:class:`StreamIn`, :class:`StreamPatch`,
:class:`StreamOut`, :class:`StreamPage`, :class:`StreamTestOut`), errors (:class:`ErrorBody`: the one error shape of
:mod:`auditlogkit.query_api.core.errors`; :data:`ERRORS`: the error answers every ``/v1`` route may give, its ``responses``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from auditlogkit.query_api.security.self_audit import SelfAuditState
from auditlogkit.schemas.event import StatusText

Interval = Literal["hour", "day", "week", "month"]
GroupBy = Literal["actor_email", "ip", "scope"]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """What every 4xx/5xx answer carries."""

    error: ErrorDetail


#: The error answers of the ``/v1`` routes (FastAPI ``responses``); a route adds its own (e.g. 404) to a copy.
ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "no or invalid token"},
    403: {"model": ErrorBody, "description": "missing permission or a filter outside your scope"},
    422: {"model": ErrorBody, "description": "invalid parameter (the message names it and the valid values)"},
    429: {"model": ErrorBody, "description": "rate limit or export limit reached (see Retry-After)"},
    503: {"model": ErrorBody, "description": "the read cannot be recorded in the audit log (audit_unavailable), or "
                                            "the store is unavailable or the query needs too much memory"},
    504: {"model": ErrorBody, "description": "the query ran longer than its time limit (query_timeout)"},
}


class ActorOut(BaseModel):
    id: str
    email: str | None = None
    type: Literal["user", "service", "system"]
    ip: str | None = None
    user_agent: str | None = None


class TargetOut(BaseModel):
    type: str | None = None
    id: str | None = None
    name: str | None = None


class PublisherOut(BaseModel):
    via: str = Field(description="http (POST /v1/ingest), kafka (the topic), api (the API's own self-audit); "
                                 "empty for events stored before publishers were recorded")
    id: str | None = Field(None, description="the service token's sub (http), query-api (api); null for kafka")


# Written out for the OpenAPI schema and type checkers; tests/unit/test_event_shape.py checks its fields (names,
# order, nesting, nullability, enums) against query_api/read/event_shape.py EVENT_SHAPE, the one spec of the event.
class EventOut(BaseModel):
    """A stored event: every field of EVENT.md, ``received_at``, and the catalog labels."""

    schema_version: int = 1
    event_id: str
    occurred_at: str = Field(description="RFC 3339 UTC with milliseconds")
    org_id: str
    workspace_id: str | None = None
    scope: str
    scope_label: str
    category: str
    category_label: str
    action: str
    action_label: str
    status: StatusText
    actor: ActorOut
    target: TargetOut
    description: str
    detail: dict[str, Any] | None = None
    detail_omitted: bool = Field(False, description="list rows only: the detail is larger than the list's cap and "
                                                    "left out (null); GET /v1/events/{event_id} serves it whole")
    source: str | None = None
    request_id: str | None = None
    received_at: str
    publisher: PublisherOut = Field(description="who published it, from the credential that wrote it (never from "
                                                "the event's own fields)")


class EventPage(BaseModel):
    data: list[EventOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next (older) page; null at the end")


class ActorSuggestion(BaseModel):
    email: str
    last_seen: str = Field(description="RFC 3339 UTC with milliseconds")


class ActorPage(BaseModel):
    data: list[ActorSuggestion]
    next_cursor: None = None


class Bucket(BaseModel):
    start: str
    total: int
    success: int
    failed: int


class TopGroup(BaseModel):
    key: str
    total: int
    success: int
    failed: int
    first_seen: str
    last_seen: str


class IntegrityOut(BaseModel):
    org_id: str
    checked_at: str
    clean: bool = Field(description="nothing altered, deleted, unrecorded or conflicting")
    counts: dict[str, int] = Field(description="events per status: verified, altered, deleted, unrecorded, "
                                               "conflicting, expired (near the retention limit: not checked)")
    findings: dict[str, list[str]] = Field(description="up to 20 event ids per finding")
    not_checked_before: str | None = Field(None, description="events older than this are near the retention "
                                                             "limit and not checked")


class KafkaPosition(BaseModel):
    topic: str
    partition: int
    offset: int


class ConflictOut(BaseModel):
    event_id: str
    occurred_at: str = Field(description="the occurred_at the conflicting message carried")
    received_at: str
    content_sha256: str = Field(description="hex SHA-256 of its content (auditlog-content-v1)")
    content: dict[str, Any] | None = Field(description="the event it carried, as stored columns")
    publisher: PublisherOut
    kafka: KafkaPosition


class ConflictPage(BaseModel):
    data: list[ConflictOut]


class StatsOut(BaseModel):
    interval: Interval
    start: str
    end: str
    total: int
    success: int
    failed: int
    buckets: list[Bucket]
    group_by: GroupBy | None = None
    top: list[TopGroup]


class ActionOut(BaseModel):
    code: str
    label: str


class CategoryOut(BaseModel):
    code: str
    label: str
    actions: list[ActionOut]


class ScopeOut(BaseModel):
    code: str
    label: str
    categories: list[CategoryOut]


class CatalogOut(BaseModel):
    scopes: list[ScopeOut]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    store: Literal["ok", "unreachable"] | None = None
    self_audit: SelfAuditState | None = Field(
        None, description="every read publishes its audit_log.* event: ok; the broker did not acknowledge the last "
                          "one: failing; not connected yet: connecting (reads are refused in both, and the status "
                          "is unavailable); no producer configured: off")
    consumer: dict[str, Any] | None = None
    parts: dict[str, Literal["ok", "down"]] | None = Field(
        None, description="auditlog up: its broker and the broker's storage; while one is down (it is restarted "
                          "within seconds) the status is unavailable")


class RejectedEvent(BaseModel):
    index: int = Field(description="0-based position among the body's non-blank lines (0 for a single event)")
    field: str | None = Field(description="the event's field at fault (dotted, e.g. actor.email); null: the line "
                                          "as a whole (not JSON, too large)")
    reason: str


class IngestResult(BaseModel):
    accepted: int = Field(description="events acknowledged by the broker (acks=all): durable in Kafka")
    rejected: list[RejectedEvent]


class IngestRefused(BaseModel):
    """A 422 / 403 of ingest: the usual error object and every rejected event."""

    error: ErrorDetail
    rejected: list[RejectedEvent] = Field(default_factory=list, description="every refused event (absent when the "
                                                                            "token itself was refused)")


# ----- log streams (STREAMS.md): the bodies are checked by auditlogkit.query_api.streams.config (422 naming the field) ------
class _TextBody(BaseModel):
    """A request body whose every string is encodable text: a lone surrogate (``"\\ud800"``, which JSON allows)
    is a 422 here, not a failure when it is stored, logged or sent on."""

    model_config = {"extra": "forbid"}

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        stack = [data]
        while stack:  # iterative: a deep body cannot exhaust the stack here
            v = stack.pop()
            if isinstance(v, str):
                v.encode("utf-8")  # UnicodeEncodeError is a ValueError: a 422 naming the body
            elif isinstance(v, dict):
                stack.extend(v.keys())
                stack.extend(v.values())
            elif isinstance(v, list):
                stack.extend(v)
        return data


class StreamIn(_TextBody):
    """``POST /v1/streams``."""

    name: str = Field(description="1 to 100 characters")
    destination: dict[str, Any] = Field(description="``type`` (webhook, splunk_hec, datadog, s3) and its fields, "
                                                    "secrets included (never returned)")
    filters: dict[str, Any] | None = Field(None, description="some of scope, category, action, status, workspace_id "
                                                             "(as the list takes them)")
    start: str = Field("now", description='"now" or an RFC 3339 time within the retention (a backfill)')


class StreamPatch(_TextBody):
    """``PATCH /v1/streams/{id}``: only what is given changes."""

    name: str | None = None
    state: Literal["active", "paused"] | None = None
    filters: dict[str, Any] | None = None
    destination: dict[str, Any] | None = Field(None, description="new fields or credentials of the same type (a "
                                                                 "secret left out keeps its value), or a whole new "
                                                                 "destination with its type")


class StreamError(BaseModel):
    at: str
    message: str
    http_status: int | None = None


class StreamOut(BaseModel):
    id: str
    name: str
    destination: dict[str, str] = Field(description='its type and fields; secrets as "••••" + their last 4')
    filters: dict[str, Any]
    state: Literal["active", "paused", "failing"]
    delivered: int = Field(description="events delivered")
    lag_seconds: float = Field(description="age of the oldest stored event not yet delivered (0: caught up)")
    last_delivered_at: str | None = None
    last_error: StreamError | None = None
    start: str | None = None
    created_at: str
    updated_at: str


class StreamPage(BaseModel):
    data: list[StreamOut]


class StreamTestOut(BaseModel):
    delivered: bool = Field(description="the destination accepted the test event (2xx; S3: object stored)")
    http_status: int | None = None
    message: str = Field(description="the destination's reply, or why nothing was sent")
