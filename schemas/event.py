"""The v1 audit event (EVENT.md) as pydantic models: the one source of the contract.

Contract of :func:`parse_event` (used by the producer before sending and by the consumer on every message):
- input is the raw message bytes (UTF-8 JSON object, no envelope) or a mapping;
- unknown fields are rejected at every level, types are strict (``"1"`` is not an int), strings lose NUL bytes;
- ``occurred_at`` must carry a zone; it is normalised to UTC with millisecond precision and may lie at most
  24 h in the future;
- ``(scope, category, action)`` must be a triple of the catalog given in the validation context
  (default catalog otherwise);
- a missing ``description`` is rendered from the action label and the target;
- ``detail`` is plain JSON: no ``NaN``/``Infinity`` (nor a number beyond a double's range), at most
  :data:`MAX_DETAIL_DEPTH` levels; deeper nesting anywhere in the message is refused before anything recurses;
- any violation raises :class:`EventError` whose ``field`` and ``reason`` name the first broken rule; no input
  raises anything else.

Also the one place for two small facts: :class:`Status` (an event's outcome) and :func:`as_utc` (a naive time
read back from the store is UTC), which :func:`format_ts` applies.
"""

from __future__ import annotations

import json
import math
import re
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import islice
from typing import Annotated, Any, Literal, get_args

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from auditlogkit.schemas.catalog import Catalog, get_catalog

MAX_MESSAGE_BYTES = 1024 * 1024  # a larger Kafka message is dead-lettered unparsed
MAX_DETAIL_BYTES = 64 * 1024
MAX_DETAIL_DEPTH = 32  # ``detail`` itself is level 1
_MAX_DEPTH = MAX_DETAIL_DEPTH + 1  # in the whole message, whose object is level 1
_TOO_DEEP = f"nested deeper than {MAX_DETAIL_DEPTH} levels"
_NOT_FINITE = "NaN, Infinity or a number beyond a double's range: not plain JSON"
MAX_FUTURE = timedelta(hours=24)
_EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$")


def _without_nul(obj: Any) -> Any:
    if isinstance(obj, str):
        return obj.replace("\x00", "")
    if isinstance(obj, dict):
        return {_without_nul(k): _without_nul(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_nul(v) for v in obj]
    return obj


def _strip_nul(data: bytes | str) -> bytes | str:
    """Strings lose NUL bytes (EVENT.md). In JSON a NUL can only be the escape ``\\u0000`` inside a string, so
    the common case is one substring test on the raw message; the rare message with one is re-encoded."""
    if isinstance(data, _BYTES):
        if b"\\" not in data or b"\\u0000" not in data:  # one-byte search first: most messages have no escape
            return data
    elif "\\u0000" not in data:
        return data
    try:
        return json.dumps(_without_nul(json.loads(data)), ensure_ascii=False)
    except (ValueError, RecursionError):
        return data  # not JSON, or too deep: validation reports it


_BYTES = (bytes, bytearray)
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')  # a string, or a bracket outside strings
_SCAN_TOKENS = 100_000


def _unplain(value: Any) -> str | None:
    """Why the container ``value`` (``detail``) is not plain JSON (deeper than :data:`MAX_DETAIL_DEPTH`, a float
    that is not finite), or None. Level by level, iterative: no input makes it recurse (hot path: keep it lean)."""
    level, depth, isfinite = [value], 1, math.isfinite
    while True:
        below: list[Any] = []
        for v in level:
            for x in v.values() if type(v) is dict else v:
                t = type(x)
                if t is str or x is None:
                    continue
                if t is float:
                    if not isfinite(x):
                        return _NOT_FINITE
                elif t is dict or t is list or t is tuple:
                    below.append(x)
        if not below:  # no level below this one (no empty pass over nothing)
            return None
        depth += 1
        if depth > MAX_DETAIL_DEPTH:
            return _TOO_DEEP
        level = below


def _deep_field(data: bytes | str) -> str:
    """The top-level field under which the JSON text ``data`` first nests deeper than :data:`_MAX_DEPTH` levels,
    ``message`` when under none or past the first :data:`_SCAN_TOKENS` strings and brackets (a bound on crafted
    text). One linear scan that stops there, for text too deep for the parsers."""
    raw = data if isinstance(data, _BYTES) else data.encode("utf-8", "surrogatepass")
    depth, top_object, key, field = 0, False, b"", "message"
    for m in islice(_JSON_TOKEN.finditer(raw), _SCAN_TOKENS):
        tok = m.group()
        if tok[0] == 0x22:  # '"': at level 1 of an object, the key of the value that follows
            if depth == 1:
                key = tok
        elif tok in (b"[", b"{"):
            depth += 1
            if depth == 1:
                top_object = tok == b"{"
            elif depth == 2:
                field = _key_name(key) if top_object else "message"
            elif depth > _MAX_DEPTH:
                return field
        else:
            depth -= 1
    return "message"


def _key_name(tok: bytes) -> str:
    try:
        name = json.loads(tok)
    except ValueError:
        return "message"
    return name if isinstance(name, str) and 0 < len(name) <= 128 else "message"


_MS = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_future_limit = (0.0, datetime.min.replace(tzinfo=UTC))  # (time.time() when computed, now + MAX_FUTURE)


def _latest_allowed() -> datetime:
    """now + :data:`MAX_FUTURE`, recomputed at most every 0.1 s (the rule is about hours, not microseconds)."""
    global _future_limit
    now = time.time()
    if now - _future_limit[0] > 0.1:
        _future_limit = (now, datetime.fromtimestamp(now, UTC) + MAX_FUTURE)
    return _future_limit[1]


Id = Annotated[str, Field(min_length=1, max_length=256)]
OptText = Annotated[str, Field(max_length=512)] | None


_IPV4 = re.compile(r"^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$")


def normal_ip(v: str) -> str:
    """The canonical text of an IPv4/IPv6 address: IPv4 dotted quad without leading zeros, IPv6 as RFC 5952
    (lower case, longest zero run compressed, IPv4-mapped as ``::ffff:192.0.2.1``). libc does the work."""
    if _IPV4.match(v):
        return v
    try:
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, v))
    except (OSError, ValueError):
        raise ValueError(f"actor.ip: {v!r} is not a valid IPv4 or IPv6 address") from None


class Status(StrEnum):
    """An event's outcome: the ``status`` field, and the column's values."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


#: :class:`Status` as the model's field type: plain strings in, out and in the JSON Schema
StatusText = Literal["SUCCESS", "FAILED"]
assert get_args(StatusText) == tuple(Status)


def as_utc(ts: datetime) -> datetime:
    """``ts`` as an aware UTC datetime: a naive value is taken as UTC (ClickHouse drivers return naive UTC values
    for ``DateTime64(3, 'UTC')`` in some modes), never as local time; an aware one is converted."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def epoch_ms(ts: datetime) -> int:
    """``ts`` (naive taken as UTC) as milliseconds since the epoch: ``DateTime64(3)`` ticks."""
    return (as_utc(ts) - _EPOCH) // _MS


_RULE_FIELDS = ("scope", "category", "action", "occurred_at", "actor.email", "actor.ip", "detail")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Actor(_Strict):
    """Who acted."""

    id: Id
    email: Annotated[str, Field(max_length=254)] | None = None
    type: Literal["user", "service", "system"]
    ip: Annotated[str, Field(max_length=64)] | None = None
    user_agent: Annotated[str, Field(max_length=1024)] | None = None


class Target(_Strict):
    """The resource acted on."""

    type: OptText = None
    id: OptText = None
    name: OptText = None


class AuditEvent(_Strict):
    """One audit event, schema version 1."""

    schema_version: Literal[1] = 1
    event_id: uuid.UUID
    occurred_at: AwareDatetime
    org_id: Annotated[str, Field(min_length=1, max_length=128)]
    workspace_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    scope: Annotated[str, Field(min_length=1, max_length=64)]
    category: Annotated[str, Field(min_length=1, max_length=64)]
    action: Annotated[str, Field(min_length=1, max_length=128)]
    status: StatusText
    actor: Actor
    target: Target = Target()
    description: Annotated[str, Field(max_length=2000)] | None = None
    detail: dict[str, Any] | None = None
    source: Annotated[str, Field(max_length=256)] | None = None
    request_id: Annotated[str, Field(max_length=256)] | None = None

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> AuditEvent:
        """Every rule beyond types, in one call (one validator call per event on the consumer's hot path).
        Errors are ``"<field>: <rule>"``; :func:`_error_from` turns them into :class:`EventError`."""
        ctx = info.context if isinstance(info.context, dict) else {}
        ts = self.occurred_at
        if ts.utcoffset():
            ts = ts.astimezone(UTC)
        if ts.microsecond % 1000:
            ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)
        if ts > _latest_allowed():
            raise ValueError("occurred_at: lies more than 24 h in the future")
        if ts is not self.occurred_at:
            object.__setattr__(self, "occurred_at", ts)
        a = self.actor
        if a.email is not None and not _EMAIL_RE.match(a.email):
            raise ValueError("actor.email: not a valid e-mail address")
        if a.ip is not None:
            ip = normal_ip(a.ip)
            if ip != a.ip:
                object.__setattr__(a, "ip", ip)
        if self.detail is not None and (why := _unplain(self.detail)) is not None:
            raise ValueError(f"detail: {why}")
        big_message = ctx.get("message_bytes", MAX_DETAIL_BYTES + 1) > MAX_DETAIL_BYTES  # else detail can't be
        if self.detail is not None and big_message and len(_dumps(self.detail)) > MAX_DETAIL_BYTES:
            raise ValueError(f"detail: larger than {MAX_DETAIL_BYTES} bytes encoded")
        catalog: Catalog = ctx.get("catalog") or get_catalog()
        label = catalog.valid_action_label(self.scope, self.category, self.action)
        if label is None:
            field, problem = catalog.check(self.scope, self.category, self.action) or ("action", "invalid")
            raise ValueError(f"{field}: {problem}")
        if self.description is None:
            what = self.target.name or self.target.id
            object.__setattr__(self, "description", f"{label} {what}" if what else label)
        return self

    def detail_json(self) -> str | None:
        """``detail`` as compact JSON text (key order kept), as stored."""
        if self.detail is None:
            return None
        return _dumps(self.detail).decode()

    def to_json_bytes(self) -> bytes:
        """The wire form (EVENT.md): compact JSON, ``occurred_at`` with millisecond precision and ``Z``."""
        d = self.model_dump(mode="json")
        d["occurred_at"] = format_ts(self.occurred_at)
        return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode()


def _dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, key order kept (orjson; json for what orjson refuses, e.g. integers beyond 64 bits)."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class EventError(ValueError):
    """An event broke the contract. ``field`` is a dotted path (``actor.ip``), ``reason`` says what rule."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def format_ts(ts: datetime) -> str:
    """RFC 3339, UTC, milliseconds: ``2026-11-21T09:14:03.512Z``. A naive ``ts`` is taken as UTC (:func:`as_utc`)."""
    ts = as_utc(ts)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _error_from(exc: ValidationError) -> EventError:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "event"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    # rule errors (catalog, ip, ...) arrive as "field: message" from the model validator
    if not err["loc"] and ": " in msg and msg.split(": ", 1)[0] in _RULE_FIELDS:
        loc, msg = msg.split(": ", 1)
    given = err.get("input")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (not in the v1 contract)"
    elif isinstance(given, float) and not math.isfinite(given):
        msg = _NOT_FINITE
    elif err["type"] == "literal_error" and loc == "schema_version":
        msg = f"unsupported schema_version {err.get('input')!r}; this consumer accepts 1"
    return EventError(loc, msg)


def parse_event(data: bytes | str | dict[str, Any], catalog: Catalog | None = None) -> AuditEvent:
    """Validate one event; raise :class:`EventError` (never anything else) when it breaks the contract."""
    text: bytes | str = b""
    try:
        if isinstance(data, dict):
            try:
                text = json.dumps(data, ensure_ascii=False)
            except RecursionError:
                raise _deep_dict(data) from None
        else:
            text = data
        if isinstance(text, _BYTES) and len(text) > MAX_MESSAGE_BYTES:
            raise EventError("message", f"larger than {MAX_MESSAGE_BYTES} bytes ({len(text)})")
        text = _strip_nul(text)
        ctx = {"catalog": catalog, "message_bytes": len(text) * (1 if isinstance(text, _BYTES) else 4)}
        return AuditEvent.model_validate_json(text, context=ctx)
    except ValidationError as exc:
        bad_json = next((e["msg"] for e in exc.errors(include_url=False) if e["type"] == "json_invalid"), None)
        if bad_json is not None:
            return _raise_json(text, bad_json)
        raise _error_from(exc) from None
    except RecursionError:  # a safety net: nothing above recurses with the input's depth
        raise EventError("message", _TOO_DEEP) from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, EventError):
            raise
        raise EventError("message", str(exc)) from None


def _deep_dict(data: dict[str, Any]) -> EventError:
    """The error of a mapping too deep to encode: the first top-level field that is not plain JSON."""
    for k, v in data.items():
        if type(v) in (dict, list, tuple) and (why := _unplain(v)) is not None:
            return EventError(str(k), why)
    return EventError("message", _TOO_DEEP)


def _raise_json(data: bytes | str, why: str) -> AuditEvent:
    """The :class:`EventError` of a message the JSON parser refused (``why``: its message)."""
    if isinstance(data, bytes | bytearray):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventError("message", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if "recursion limit" in why:  # the parser's own depth limit, far beyond ours: json.loads would recurse too
        raise EventError(_deep_field(data), _TOO_DEEP)
    try:
        json.loads(data)
    except json.JSONDecodeError as exc:
        raise EventError("message", f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise EventError(_deep_field(data), _TOO_DEEP) from None
    except ValueError:  # json.loads refuses it too, for another reason (an integer of over 4,300 digits)
        pass
    raise EventError("message", f"not valid JSON ({why.removeprefix('Invalid JSON: ')})")
