"""The keyset cursor of ``GET /v1/events`` (query_api/cursor.py): it round-trips exactly (millisecond precision,
UTC) and anything not produced by :func:`encode` with this server's keys is a 400 ``invalid_cursor``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.read import cursor
from auditlogkit.server.signing import Purpose, ServerKeys

KEYS = ServerKeys("cursor-test-secret-0123456789abcdef")

TS = datetime(2026, 11, 21, 9, 14, 3, 512000, tzinfo=UTC)
EID = uuid.UUID("0b9d6c2e-6f44-4f5e-9a53-2f0a4b1c7d11")


def _doc(c: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(c + "=" * (-len(c) % 4)))


def _pack(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode().rstrip("=")


def _assert_rejected(c: str) -> None:
    with pytest.raises(ApiError) as ei:
        cursor.decode(c, KEYS)
    assert ei.value.status == 400 and ei.value.field == "cursor" and ei.value.code == "invalid_cursor"


@pytest.mark.parametrize("ts", [
    TS,
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),  # before the epoch: negative milliseconds
    datetime(2199, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
])
def test_round_trip(ts: datetime) -> None:
    c = cursor.encode(ts, EID, KEYS)
    assert cursor.decode(c, KEYS) == (ts, EID)
    assert set(c) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")  # URL-safe, no padding


def test_encode_normalises_its_input() -> None:
    c = cursor.encode(TS, EID, KEYS)
    assert cursor.encode(TS.replace(tzinfo=None), EID, KEYS) == c  # naive is UTC (as chDB returns it)
    assert cursor.encode(TS.astimezone(timezone(timedelta(hours=-7))), EID, KEYS) == c  # other zone, same instant
    assert cursor.encode(TS, str(EID), KEYS) == c  # the event id as text
    ts, _ = cursor.decode(cursor.encode(TS + timedelta(microseconds=999), EID, KEYS), KEYS)
    assert ts == TS  # millisecond precision, like occurred_at: sub-millisecond parts are dropped
    assert ts.tzinfo is not None and ts.utcoffset() == timedelta(0)


def test_tampered_cursor_is_rejected() -> None:
    c = cursor.encode(TS, EID, KEYS)
    doc = _doc(c)
    inner = json.loads(doc["k"])
    later = json.dumps({**inner, "t": inner["t"] + 1}, separators=(",", ":"))
    for bad in (
        _pack({**doc, "k": later}),  # moved position, old checksum
        _pack({**doc, "m": "0" * 16}),  # forged checksum
        _pack({**doc, "m": doc["m"][:-1]}),  # truncated checksum
        _pack({**doc, "v": 3}),  # unknown version
        _pack({"k": doc["k"], "m": doc["m"]}),  # no version
        _pack({"v": 1, "k": doc["k"]}),  # no checksum
        c[:-1], c[:-3], c[:10], "", "x", "=" * 8, "!!!!", c.upper(), "A" * 600, c + "x" * 600,
        base64.urlsafe_b64encode(b"not json").decode(),
        _pack([1, 2]),  # not an object
    ):
        _assert_rejected(bad)


def test_a_well_signed_cursor_with_wrong_types_is_rejected() -> None:
    """Only shapes :func:`encode` makes are accepted, even with a valid checksum."""
    def signed(inner: object) -> str:
        body = json.dumps(inner, separators=(",", ":")).encode()
        return _pack({"v": 2, "k": body.decode(), "m": cursor._mac(KEYS, body)})

    assert cursor.decode(signed({"t": 5, "id": str(EID)}), KEYS) == (
        datetime(1970, 1, 1, 0, 0, 0, 5000, tzinfo=UTC), EID)
    for inner in ({"t": "5", "id": str(EID)}, {"t": True, "id": str(EID)}, {"t": 5.5, "id": str(EID)},
                  {"t": 5, "id": "not-a-uuid"}, {"t": 5, "id": 7}, {"t": 5}, {"id": str(EID)}, [5, str(EID)],
                  {"t": 10**20, "id": str(EID)}):
        _assert_rejected(signed(inner))


def test_a_cursor_this_server_did_not_issue_is_rejected() -> None:
    """Signed with another server secret, or the old form whose "MAC" key was a constant in the source: 400."""
    other = ServerKeys("another-server-secret-0123456789abcdef")
    c = cursor.encode(TS, EID, other)
    assert cursor.decode(c, other) == (TS, EID)
    _assert_rejected(c)
    body = json.dumps({"t": 0, "id": str(EID)}, separators=(",", ":")).encode()  # the first event ever, forged
    old_mac = hmac.new(b"auditlog-cursor-v1", body, hashlib.sha256).hexdigest()[:16]
    _assert_rejected(_pack({"v": 1, "k": body.decode(), "m": old_mac}))
    _assert_rejected(_pack({"v": 2, "k": body.decode(), "m": old_mac}))
    forged = base64.urlsafe_b64encode(other.mac(Purpose.CURSOR, body)[:16]).decode().rstrip("=")
    _assert_rejected(_pack({"v": 2, "k": body.decode(), "m": forged}))
    tail_key = base64.urlsafe_b64encode(KEYS.mac(Purpose.TAIL_POSITION, body)[:16]).decode().rstrip("=")
    _assert_rejected(_pack({"v": 2, "k": body.decode(), "m": tail_key}))  # this server's key of another purpose
