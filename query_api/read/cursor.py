"""The opaque keyset cursor of ``GET /v1/events``: the (occurred_at, event_id) of the last row of a page.

Contract: :func:`encode` returns URL-safe base64 of a small JSON document with 16 bytes of the MAC of the server's
:attr:`~auditlogkit.server.signing.Purpose.CURSOR` key; :func:`decode` returns ``(occurred_at, event_id)`` or raises a 400
:class:`ApiError` (code ``invalid_cursor``, field ``cursor``) for anything this server secret did not produce with
:func:`encode` (truncated, edited, forged, of another secret, wrong types). A cursor only positions a page inside
the caller's own scope: it carries no tenant and grants nothing.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.schemas.event import as_utc
from auditlogkit.server.signing import Purpose, ServerKeys

_VERSION = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAC_BYTES = 16


def _mac(keys: ServerKeys, body: bytes) -> str:
    return base64.urlsafe_b64encode(keys.mac(Purpose.CURSOR, body)[:MAC_BYTES]).decode().rstrip("=")


def encode(occurred_at: datetime, event_id: uuid.UUID | str, keys: ServerKeys) -> str:
    ms = (as_utc(occurred_at) - _EPOCH) // timedelta(milliseconds=1)
    body = json.dumps({"t": ms, "id": str(event_id)}, separators=(",", ":")).encode()
    doc = json.dumps({"v": _VERSION, "k": body.decode(), "m": _mac(keys, body)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(doc).decode().rstrip("=")


def decode(cursor: str, keys: ServerKeys) -> tuple[datetime, uuid.UUID]:
    bad = ApiError(400, "invalid cursor: this server did not issue it; pass next_cursor of the previous page "
                   "unchanged", field="cursor", code="invalid_cursor")
    if len(cursor) > 512:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = json.loads(raw)
        body = doc["k"].encode()
        m = doc["m"]
        mac = base64.urlsafe_b64decode(m + "=" * (-len(m) % 4))
        if doc.get("v") != _VERSION or len(mac) != MAC_BYTES or not keys.verify(Purpose.CURSOR, body, mac):
            raise bad
        inner = json.loads(body)
        ms = inner["t"]
        if not isinstance(ms, int) or isinstance(ms, bool):
            raise bad
        return _EPOCH + timedelta(milliseconds=ms), uuid.UUID(inner["id"])
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, OSError):
        raise bad from None
