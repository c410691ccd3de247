"""The opaque keyset cursor of ``GET /v1/events``: the (occurred_at, event_id) of the last row of a page.

Contract: :func:`encode` returns URL-safe base64 of a small JSON document plus a checksum; :func:`decode`
returns ``(occurred_at, event_id)`` or raises a 422 :class:`ApiError` (field ``cursor``) for anything that was
not produced by :func:`encode` (truncated, edited, wrong types). A cursor only positions a page inside the
caller's own scope: it carries no tenant and grants nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta

from query_api.errors import invalid
from schemas.event import as_utc

_KEY = b"auditlog-cursor-v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _mac(body: bytes) -> str:
    return hmac.new(_KEY, body, hashlib.sha256).hexdigest()[:16]


def encode(occurred_at: datetime, event_id: uuid.UUID | str) -> str:
    ms = (as_utc(occurred_at) - _EPOCH) // timedelta(milliseconds=1)
    body = json.dumps({"t": ms, "id": str(event_id)}, separators=(",", ":")).encode()
    doc = json.dumps({"v": 1, "k": body.decode(), "m": _mac(body)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(doc).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    bad = invalid("cursor", "invalid cursor: pass next_cursor of the previous page unchanged")
    if len(cursor) > 512:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = json.loads(raw)
        body = doc["k"].encode()
        if doc.get("v") != 1 or not hmac.compare_digest(doc["m"], _mac(body)):
            raise bad
        inner = json.loads(body)
        ms = inner["t"]
        if not isinstance(ms, int) or isinstance(ms, bool):
            raise bad
        return _EPOCH + timedelta(milliseconds=ms), uuid.UUID(inner["id"])
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, OSError):
        raise bad from None
