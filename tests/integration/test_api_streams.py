"""``/v1/streams`` on the real app and a real chDB store: who may, what is shown, what is refused, what is recorded."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from auditlogkit.query_api.streams.keys import streams_key
from auditlogkit.schemas.event import parse_event
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.integration.streams_helpers import Receiver, settings_for
from tests.integration.test_api_helpers import app_client, auth, token

OWNER_PERMS = ("audit:read", "audit:export", "audit:stream")
SECRET = "whsec-0123456789-abcdefgh-WXYZ"


class AckingProducer:
    """Stands in for the self-audit's producer: acknowledges (and keeps) every event until ``failing``."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.failing = False

    async def send(self, event: dict[str, Any], **_: Any) -> asyncio.Future[None]:
        if self.failing:
            raise ConnectionError("the broker is gone")
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        self.events.append(event)
        return ack

    def connected(self) -> bool:
        return not self.failing

    async def reachable(self) -> None:
        if self.failing:
            raise ConnectionError("the broker is gone")

    def actions(self) -> list[str]:
        return [e["action"] for e in self.events]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def s(store: Store, tmp_path: Path) -> Settings:
    return settings_for(store, tmp_path, api_rate_per_second=0, api_audit_ack_timeout_seconds=1.0)


@pytest.fixture
def producer() -> AckingProducer:
    return AckingProducer()


@pytest.fixture
def client(s: Settings, store: Store, producer: AckingProducer) -> Iterator[TestClient]:
    assert s.streams_key is not None
    with app_client(s, store, audit_producer=producer,
                    streams_key=streams_key(s.streams_key.get_secret_value())) as c:
        yield c


@pytest.fixture
def strict_client(s: Settings, store: Store, producer: AckingProducer) -> Iterator[TestClient]:
    """As ``client``, without AUDITLOG_STREAMS_ALLOW_HOSTS: https to public addresses only."""
    assert s.streams_key is not None
    with app_client(s.model_copy(update={"streams_allow_hosts": ""}), store, audit_producer=producer,
                    streams_key=streams_key(s.streams_key.get_secret_value())) as c:
        c.app.state.streams.resolver = _resolver  # type: ignore[attr-defined]  # no DNS in tests
        yield c


def _resolver(host: str, port: int) -> list[str]:
    """example.com is public; internal.example resolves to a private address (DNS rebinding to the inside)."""
    return {"example.com": ["93.184.215.14"], "internal.example": ["10.0.0.7"]}.get(host, [])


def owner(s: Settings, org: str = "acme", sub: str = "u-owner") -> dict[str, str]:
    return auth(token(s, org=org, sub=sub, email=f"{sub}@{org}.example", permissions=OWNER_PERMS))


def webhook(url: str, **more: Any) -> dict[str, Any]:
    return {"name": "SIEM", "destination": {"type": "webhook", "url": url, "secret": SECRET}, **more}


def test_crud_round_trip_never_shows_a_secret(client: TestClient, s: Settings, receiver: Receiver,
                                             producer: AckingProducer) -> None:
    h = owner(s)
    r = client.post("/v1/streams", json=webhook(receiver.url + "/hook", filters={"status": "FAILED"}), headers=h)
    assert r.status_code == 201, r.text
    made = r.json()
    sid = made["id"]
    assert made["destination"] == {"type": "webhook", "url": receiver.url + "/hook", "secret": "••••WXYZ"}
    assert made["state"] == "active" and made["delivered"] == 0 and made["lag_seconds"] == 0
    assert made["last_error"] is None and made["last_delivered_at"] is None
    assert SECRET not in r.text

    listed = client.get("/v1/streams", headers=h)
    assert listed.status_code == 200 and [x["id"] for x in listed.json()["data"]] == [sid]
    one = client.get(f"/v1/streams/{sid}", headers=h)
    assert one.status_code == 200 and one.json()["name"] == "SIEM" and SECRET not in one.text
    assert one.json()["filters"] == {"status": "FAILED"}

    r = client.patch(f"/v1/streams/{sid}", json={"state": "paused"}, headers=h)
    assert r.status_code == 200 and r.json()["state"] == "paused"
    assert client.get(f"/v1/streams/{sid}", headers=h).json()["state"] == "paused"
    r = client.patch(f"/v1/streams/{sid}", json={"state": "active", "name": "SIEM 2"}, headers=h)
    assert r.status_code == 200 and r.json()["state"] == "active" and r.json()["name"] == "SIEM 2"
    new_secret = "whsec-another-one-0123456789-QRST"
    r = client.patch(f"/v1/streams/{sid}", json={"destination": {"secret": new_secret}}, headers=h)
    assert r.status_code == 200 and r.json()["destination"]["secret"] == "••••QRST"
    assert r.json()["destination"]["url"] == receiver.url + "/hook"

    assert client.delete(f"/v1/streams/{sid}", headers=h).status_code == 204
    assert client.get(f"/v1/streams/{sid}", headers=h).status_code == 404
    assert client.get("/v1/streams", headers=h).json()["data"] == []
    assert client.delete(f"/v1/streams/{sid}", headers=h).status_code == 404

    # every change is on record, each a valid event of the caller about this stream, with no secret in it
    assert producer.actions() == ["audit_log.stream_create", "audit_log.stream_update", "audit_log.stream_update",
                                  "audit_log.stream_update", "audit_log.stream_delete"]
    for e in producer.events:
        assert e["target"] == {"type": "audit_stream", "id": sid, "name": e["target"]["name"]}
        assert e["actor"]["id"] == "u-owner" and e["org_id"] == "acme"
        parse_event({**e, "event_id": str(uuid.uuid4()), "occurred_at": "2026-01-01T00:00:00Z"})
        text = json.dumps(e)
        assert SECRET not in text and new_secret not in text
    assert producer.events[1]["detail"]["changes"] == {"state": "paused"}
    assert producer.events[3]["detail"]["changes"]["destination"]["secrets_given"] == ["secret"]


def test_who_may_manage_streams(client: TestClient, s: Settings, receiver: Receiver, store: Store) -> None:
    body = webhook(receiver.url)
    assert client.get("/v1/streams").status_code == 401
    assert client.post("/v1/streams", json=body).status_code == 401
    reader = auth(token(s))  # an owner with audit:read and audit:export only
    assert client.get("/v1/streams", headers=reader).status_code == 403
    assert client.post("/v1/streams", json=body, headers=reader).status_code == 403
    admin = auth(token(s, role="workspace_admin", workspaces=["ws-1"], permissions=OWNER_PERMS))
    r = client.get("/v1/streams", headers=admin)
    assert r.status_code == 403 and "org owner" in r.json()["error"]["message"]
    assert s.jwt_secret
    from auditlogkit.query_api.security.auth import mint_token
    service = auth(mint_token(s.jwt_secret, sub="svc", role="service", write_orgs=["*"],
                              permissions=["audit:write", "audit:stream"]))
    assert client.get("/v1/streams", headers=service).status_code == 403

    # another org's stream is no stream of yours
    sid = client.post("/v1/streams", json=body, headers=owner(s)).json()["id"]
    other = owner(s, org="globex", sub="u-globex")
    for method, path in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/test")):
        r = client.request(method, f"/v1/streams/{sid}{path}", headers=other,
                           json={"state": "paused"} if method == "PATCH" else None)
        assert r.status_code == 404, (method, path, r.text)
    assert client.get("/v1/streams", headers=other).json()["data"] == []
    assert client.get(f"/v1/streams/{sid}", headers=owner(s)).json()["state"] == "active"
    r = client.get("/v1/streams/not-a-uuid", headers=owner(s))
    assert r.status_code == 422 and r.json()["error"]["field"] == "stream_id"


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x" * 10_000}, "name"),
    ({"name": "bad\x00name"}, "name"),
    ({"destination": {"type": "webhook", "url": "not a url", "secret": SECRET}}, "destination.url"),
    ({"destination": {"type": "webhook", "url": "http://127.0.0.1:9/x", "secret": SECRET}}, "destination.url"),
    ({"destination": {"type": "webhook", "url": "https://10.1.2.3/x", "secret": SECRET}}, "destination.url"),
    ({"destination": {"type": "webhook", "url": "https://internal.example/x", "secret": SECRET}}, "destination.url"),
    ({"destination": {"type": "webhook", "url": "https://nowhere.invalid/x", "secret": SECRET}}, "destination.url"),
    ({"destination": {"type": "ftp", "url": "https://example.com"}}, "destination.type"),
    ({"destination": {"type": "webhook", "url": "https://example.com", "secret": SECRET, "x": "1"}},
     "destination.x"),
    ({"destination": {"type": "webhook", "url": "https://example.com", "secret": 7}}, "destination.secret"),
    ({"filters": {"status": "NaN"}}, "filters.status"),
    ({"filters": {"action": {"$ne": {"a": [[[[1]]]]}}}}, "filters.action"),
    ({"filters": {"org_id": "globex"}}, "filters.org_id"),
    ({"filters": {"scope": ["service"]}}, "filters.scope"),  # one value only: a list was a 500
    ({"filters": {"workspace_id": ["ws-a"]}}, "filters.workspace_id"),  # was stored as a list
    ({"start": "1999-01-01T00:00:00Z"}, "start"),
    ({"start": "tomorrow"}, "start"),
])
def test_hostile_input_is_refused_naming_the_field(strict_client: TestClient, s: Settings, body: dict[str, Any],
                                                   field: str, producer: AckingProducer) -> None:
    client = strict_client
    full = {**webhook("https://example.com/hook"), **body}
    r = client.post("/v1/streams", json=full, headers=owner(s))
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field, err
    assert SECRET not in r.text
    assert producer.events == []  # nothing changed, nothing recorded
    assert client.get("/v1/streams", headers=owner(s)).json()["data"] == []


def test_malformed_bodies_are_422_not_500(client: TestClient, s: Settings) -> None:
    h = owner(s)
    for raw in ("[]", '{"name": 1, "destination": {}}', '{"name": "n", "destination": {"type": "webhook"}, "y": 1}',
                "[" * 100_000 + "]" * 100_000, '{"name": NaN, "destination": {"type": "webhook"}}'):
        r = client.post("/v1/streams", content=raw, headers={**h, "Content-Type": "application/json"})
        assert r.status_code in (400, 422), (raw[:40], r.status_code, r.text[:200])  # 400: not parseable JSON
        assert r.json()["error"]["code"] in ("bad_request", "invalid_parameter")
    sid = str(uuid.uuid4())
    assert client.patch(f"/v1/streams/{sid}", json={}, headers=h).status_code == 422
    assert client.patch(f"/v1/streams/{sid}", json={"state": "failing"}, headers=h).status_code == 422
    assert client.patch(f"/v1/streams/{sid}", json={"state": "paused"}, headers=h).status_code == 404


def test_a_change_that_cannot_be_recorded_is_not_made(client: TestClient, s: Settings, receiver: Receiver,
                                                      producer: AckingProducer) -> None:
    h = owner(s)
    sid = client.post("/v1/streams", json=webhook(receiver.url), headers=h).json()["id"]
    producer.failing = True
    r = client.post("/v1/streams", json=webhook(receiver.url), headers=h)
    assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable"
    assert client.patch(f"/v1/streams/{sid}", json={"state": "paused"}, headers=h).status_code == 503
    assert client.delete(f"/v1/streams/{sid}", headers=h).status_code == 503
    assert client.post(f"/v1/streams/{sid}/test", headers=h).status_code == 503
    assert receiver.requests == []
    producer.failing = False
    listed = client.get("/v1/streams", headers=h).json()["data"]
    assert [(x["id"], x["state"]) for x in listed] == [(sid, "active")]


def test_the_test_endpoint_sends_one_signed_event_and_answers_the_reply(
        client: TestClient, s: Settings, receiver: Receiver, producer: AckingProducer) -> None:
    h = owner(s)
    sid = client.post("/v1/streams", json=webhook(receiver.url + "/in"), headers=h).json()["id"]
    r = client.post(f"/v1/streams/{sid}/test", headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["delivered"] is True and r.json()["http_status"] == 200
    assert len(receiver.requests) == 1
    got = receiver.requests[0]
    assert got.path == "/in" and got.headers["x-auditlog-stream"] == sid
    assert got.headers["x-auditlog-signature"].startswith("t=")
    [event] = got.lines()
    assert event["org_id"] == "acme" and event["action"] == "audit_log.stream_test"
    assert producer.actions()[-1] == "audit_log.stream_test"

    receiver.respond = lambda req, n: (401, {}, b"bad signature")
    r = client.post(f"/v1/streams/{sid}/test", headers=h)
    assert r.status_code == 200 and r.json()["delivered"] is False and r.json()["http_status"] == 401


def test_without_a_streams_key_the_routes_say_so(s: Settings, store: Store) -> None:
    with app_client(s.model_copy(update={"streams_key": None}), store) as c:
        r = c.get("/v1/streams", headers=owner(s))
        assert r.status_code == 503 and r.json()["error"]["code"] == "streams_unavailable"
        assert c.get("/v1/streams").status_code == 401
    with app_client(s, store) as c:  # AUDITLOG_STREAMS_KEY set: the app uses it
        assert c.get("/v1/streams", headers=owner(s)).status_code == 200


class ReadOnlyStore(Store):
    """The store as a read-only ClickHouse user sees it (``readonly = 2``, the reader role's setting)."""

    def client(self) -> Any:
        c = getattr(self._local, "ro", None)
        if c is None:
            import clickhouse_connect

            from auditlogkit.server.db.roles import READONLY_SETTINGS

            c = self._local.ro = clickhouse_connect.get_client(dsn=self.url, database=self.database,
                                                                settings=READONLY_SETTINGS)
        return c


def test_a_read_only_store_user_gets_a_clear_503_and_nothing_changes(client: TestClient, s: Settings, store: Store,
                                                                      receiver: Receiver) -> None:
    """On a server the API's own user is read-only: without AUDITLOG_STREAMS_CLICKHOUSE_USER a change is refused by
    the store; the owner gets 503 store_refused (not a 500), listing still works."""
    h = owner(s)
    sid = client.post("/v1/streams", json=webhook(receiver.url), headers=h).json()["id"]
    repo = client.app.state.streams  # type: ignore[attr-defined]
    repo.store = ReadOnlyStore(store.url, store.database)
    r = client.post("/v1/streams", json=webhook(receiver.url), headers=h)
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_refused", r.text
    assert "readonly" not in r.text.lower().replace("read-only", "")  # no engine text leaks
    assert client.patch(f"/v1/streams/{sid}", json={"state": "paused"}, headers=h).status_code == 503
    listed = client.get("/v1/streams", headers=h).json()["data"]
    assert [(x["id"], x["state"]) for x in listed] == [(sid, "active")]
