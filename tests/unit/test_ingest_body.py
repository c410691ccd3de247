"""The body of ``POST /v1/ingest`` into accepted events and rejections (query_api/ingest.py): content types, NDJSON
lines and their indexes, the one validator, write_orgs, and the byte cap enforced while reading."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from starlette.requests import Request

from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.core.ingest import Batch, media_type, parse_body, read_body
from auditlogkit.query_api.security.principal import ServicePrincipal
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.event import parse_event
from tests.factories import make_event

ACME = ServicePrincipal(sub="svc", write_orgs=frozenset({"acme"}), permissions=frozenset({"audit:write"}))
ANY = ServicePrincipal(sub="svc", write_orgs=frozenset({"*"}), permissions=frozenset({"audit:write"}))


def _line(**over: Any) -> bytes:
    return json.dumps(make_event(**over)).encode()


def _parse(body: bytes, ndjson: bool = True, service: ServicePrincipal = ACME, max_events: int = 100) -> Batch:
    return parse_body(body, ndjson, service, get_catalog(), max_events)


def _status(fn: Any, *args: Any) -> int:
    with pytest.raises(ApiError) as ei:
        fn(*args)
    return ei.value.status


def test_content_types() -> None:
    assert media_type("application/json") is False
    assert media_type("application/json; charset=UTF-8") is False
    assert media_type("application/x-ndjson") is True
    assert media_type("Application/NDJSON;charset=utf-8") is True
    for bad in (None, "", "text/plain", "application/jsonl", "multipart/form-data", "application/json; charset=latin-1"):
        assert _status(media_type, bad) == 415, bad


def test_a_single_event() -> None:
    ev = make_event()
    batch = _parse(json.dumps(ev).encode(), ndjson=False)
    assert batch.single and not batch.rejected and len(batch.accepted) == 1
    org, wire = batch.accepted[0]
    assert org == "acme" and parse_event(wire).event_id == uuid.UUID(ev["event_id"])
    assert wire == parse_event(json.dumps(ev)).to_json_bytes()  # the wire form the SDK sends
    for not_json in (b"{", b"", b"not json", b'{"a": 1} {"b": 2}', b"\xff\xfe{}"):
        assert _status(_parse, not_json, False) == 400, not_json
    bad = _parse(_line(actor={"email": "nope"}), ndjson=False)
    assert not bad.accepted and [r.as_dict() for r in bad.rejected] == [
        {"index": 0, "field": "actor.email", "reason": "not a valid e-mail address"}]
    array = _parse(b"[1, 2]", ndjson=False)  # JSON, but not an event: a rejection (422), not a 400
    assert array.rejected[0].field is None and array.rejected[0].index == 0


def test_ndjson_lines_indexes_and_reasons() -> None:
    missing_id = {k: v for k, v in make_event().items() if k != "event_id"}
    missing_ts = {k: v for k, v in make_event().items() if k != "occurred_at"}
    lines = [_line(), b"", b"   ", _line(action="vm.explode"), b"{not json", _line(org_id="globex"),
             json.dumps(missing_id).encode(), json.dumps(missing_ts).encode() + b"\r", _line(extra_field=1),
             b"\t", _line(org_id="acme")]
    batch = _parse(b"\n".join(lines) + b"\n")
    assert len(batch.accepted) == 2 and not batch.single and not batch.forbidden_only
    got = {r.index: (r.field, r.reason) for r in batch.rejected}
    assert sorted(got) == [1, 2, 3, 4, 5, 6]  # blank lines are not counted
    assert got[1][0] == "action" and "vm.explode" in got[1][1]
    assert got[2][0] is None and got[2][1].startswith("not valid JSON")
    assert got[3] == ("org_id", "outside this token's write_orgs: org_id 'globex' is not one of acme")
    for i, name in ((4, "event_id"), (5, "occurred_at")):
        assert got[i][0] == name and got[i][1].startswith("required over HTTP"), got[i]
    assert got[6] == ("extra_field", "unknown field (not in the v1 contract)")
    assert len(_parse(b"\n".join(lines), service=ANY).accepted) == 3  # '*': any org


def test_forbidden_only_and_limits() -> None:
    outside = _parse(_line(org_id="globex") + b"\n" + _line(org_id="initech"))
    assert not outside.accepted and outside.forbidden_only
    mixed = _parse(_line(org_id="globex") + b"\n" + _line(actor={"email": "x"}))
    assert not mixed.accepted and not mixed.forbidden_only
    assert not _parse(b"\n\n").rejected  # nothing at all
    five = b"\n".join([_line()] * 5)
    assert len(_parse(five, max_events=5).accepted) == 5
    assert len(_parse(five + b"\n\n\n", max_events=5).accepted) == 5  # blank lines are not counted
    assert _status(_parse, five + b"\n" + _line(), True, ACME, 5) == 413


def _request(chunks: list[bytes], content_length: int | None) -> tuple[Request, list[int]]:
    """A real starlette Request over an ASGI receive callable that hands out ``chunks``; also how many were taken."""
    taken = [0]
    headers = [(b"content-type", b"application/x-ndjson")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))

    async def receive() -> dict[str, Any]:
        i = taken[0]
        taken[0] += 1
        return {"type": "http.request", "body": chunks[i] if i < len(chunks) else b"", "more_body": i + 1 < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/v1/ingest", "headers": headers, "query_string": b""}
    return Request(scope, receive), taken


async def test_the_byte_cap_is_enforced_while_reading() -> None:
    req, taken = _request([b"x" * 100] * 3, 300)
    assert await read_body(req, 300) == b"x" * 300
    req, taken = _request([b"x" * 100] * 3, 301)
    with pytest.raises(ApiError) as ei:
        await read_body(req, 300)
    assert ei.value.status == 413 and taken[0] == 0  # refused on Content-Length, nothing read
    req, taken = _request([b"x" * 100] * 50, None)  # no Content-Length (chunked): stops once past the cap
    with pytest.raises(ApiError) as ei:
        await read_body(req, 250)
    assert ei.value.status == 413 and ei.value.code == "payload_too_large" and taken[0] == 3
    req, _ = _request([b"x"], None)
    req.scope["headers"] = [(b"content-length", b"12abc")]
    with pytest.raises(ApiError) as ei:
        await read_body(req, 300)
    assert ei.value.status == 400
