"""Attacks on the new doors not covered elsewhere: PATCH as an SSRF / cross-tenant back door into a stream that
was checked at creation, hostile raw bodies on PATCH, and raw bytes / half-sent requests against s3disk."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from auditlogkit.server.settings import Settings
from tests.integration.test_api_streams import SECRET, AckingProducer, owner, producer, s, strict_client, webhook  # noqa: F401  (fixtures)
from tests.integration.test_s3disk import Stack, raw

pytestmark = pytest.mark.timeout(120)


def _snapshot(client: TestClient, st: Settings, sid: str) -> dict[str, object]:
    r = client.get(f"/v1/streams/{sid}", headers=owner(st))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize(("patch", "field"), [
    ({"destination": {"url": "https://10.1.2.3/x"}}, "destination.url"),
    ({"destination": {"url": "https://internal.example/x"}}, "destination.url"),
    ({"destination": {"url": "http://127.0.0.1:9/x"}}, "destination.url"),
    ({"destination": {"url": "https://169.254.169.254/latest/meta-data/"}}, "destination.url"),
    ({"destination": {"type": "webhook", "url": "https://[::1]/x", "secret": SECRET}}, "destination.url"),
    ({"filters": {"org_id": "globex"}}, "filters.org_id"),
])
def test_patch_cannot_point_a_checked_stream_at_the_inside_or_another_org(
        strict_client: TestClient, s: Settings, producer: AckingProducer,  # noqa: F811
        patch: dict[str, object], field: str) -> None:
    """Creation is guarded; a PATCH must be guarded the same way, and a refused PATCH changes and records nothing."""
    c, h = strict_client, owner(s)
    r = c.post("/v1/streams", json=webhook("https://example.com/hook"), headers=h)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    before, events = _snapshot(c, s, sid), len(producer.events)
    r = c.patch(f"/v1/streams/{sid}", json=patch, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field, r.json()
    assert _snapshot(c, s, sid) == before
    assert len(producer.events) == events  # nothing recorded for a refused change


def test_hostile_raw_bodies_on_patch_are_4xx_json_and_change_nothing(
        strict_client: TestClient, s: Settings, producer: AckingProducer) -> None:  # noqa: F811
    c, h = strict_client, owner(s)
    sid = c.post("/v1/streams", json=webhook("https://example.com/hook"), headers=h).json()["id"]
    before, events = _snapshot(c, s, sid), len(producer.events)
    bodies = [
        b'{"name": "\xff\xfe bad utf-8"}',
        b"\xff\xfe\x00\x00",
        b'{"name": NaN}',
        b'{"filters": {"status": Infinity}}',
        b'{"state": "paused", "state": "active", "name": "' + b"x" * (10 * 1024 * 1024) + b'"}',
        b'{"filters": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_000 + b"}",
        b'{"destination": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"name": "\\ud800"}',
        b"",
    ]
    for body in bodies:
        for path, method in ((f"/v1/streams/{sid}", "PATCH"), ("/v1/streams", "POST")):
            r = c.request(method, path, content=body, headers={**h, "Content-Type": "application/json"})
            assert 400 <= r.status_code < 500, (method, body[:40], r.status_code, r.text[:200])
            assert r.json()["error"]["code"], r.text[:200]
    assert _snapshot(c, s, sid) == before
    assert [x["id"] for x in c.get("/v1/streams", headers=h).json()["data"]] == [sid]
    assert len(producer.events) == events


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[Stack]:
    st = Stack(tmp_path / "s3").start_s3()
    yield st
    st.kill()


def test_s3disk_raw_bytes_and_half_sent_requests_do_not_stop_it(s3: Stack) -> None:
    bad = [
        b"GET /tansu/\xff\xfe HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"PUT /tansu/a\x00b HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        b"GET /tansu/k HTTP/1.1\r\nX-\xff: \xfe\xfd\r\nConnection: close\r\n\r\n",
        b"GET /tansu/a%00b HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /tansu/a%2f..%2f..%2fetc%2fpasswd HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /tansu/%2e%2e HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /%2e%2e/etc/passwd HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello
    ]
    for req in bad:
        resp = raw(s3.s3port, req)
        assert resp == b"" or resp.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 404 ")), (req[:50], resp[:200])
        assert b"root:" not in resp
    # many clients that send half a request and stall must not keep others out
    stalled = []
    try:
        for _ in range(200):
            c = socket.create_connection(("127.0.0.1", s3.s3port), timeout=5)
            c.sendall(b"PUT /tansu/slow HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
            stalled.append(c)
        with httpx.Client(base_url=s3.url, timeout=5) as h:
            key = f"ok/{uuid.uuid4()}"
            assert h.put(f"/tansu/{key}", content=b"still here").status_code == 200
            assert h.get(f"/tansu/{key}").content == b"still here"
            assert h.get("/tansu/slow").status_code == 404  # a cut-short body is never stored
    finally:
        for c in stalled:
            with contextlib.suppress(OSError):
                c.close()
    assert s3.s3 is not None and s3.s3.poll() is None
    assert not [e for e in s3.log_events() if e.get("level") == "error"]
