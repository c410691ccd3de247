"""Who may read what: the principal x endpoint matrix with exact status codes and rows,
and a property test that a workspace admin never receives another workspace's event, whatever the filters."""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from auditlogkit.query_api.core.app import create_app
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.test_api_helpers import auth, store_events

SECRET = "matrix-secret-0123456789abcdef0123456789"
NOW = datetime.now(UTC)
# (org, workspace, e-mail) -> events; every e-mail starts with "us" so one autocomplete prefix hits all
LAYOUT = [("acme", "w1", "us-w1@acme.example", 7), ("acme", "w2", "us-w2@acme.example", 5),
          ("acme", None, "us-org@acme.example", 4), ("globex", "g1", "us-gx@globex.example", 6)]


def _ts(minutes: int) -> str:
    return (NOW - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _build_events() -> list[dict[str, Any]]:
    triples = get_catalog().all_actions()
    out, i = [], 0
    for org, ws, email, n in LAYOUT:
        for _ in range(n):
            s, c, a = triples[(i * 7) % len(triples)]
            out.append(make_event(event_id=str(uuid.UUID(int=i + 1, version=4)), occurred_at=_ts(10 + i * 13),
                                  org_id=org, workspace_id=ws, scope=s, category=c, action=a,
                                  status="FAILED" if i % 3 == 0 else "SUCCESS",
                                  actor={"id": f"u-{email[:5]}", "email": email, "ip": f"198.51.100.{i % 4}"},
                                  target={"type": c, "id": f"{c}-{i}", "name": f"{c} name {i % 5}"},
                                  description=f"event {i} in {ws or 'org'}"))
            i += 1
    return out


EVENTS = _build_events()


@pytest.fixture(scope="module")
def world(chdb_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Settings]]:
    store = Store(chdb_url, f"acc_{uuid.uuid4().hex[:10]}")
    migrate(store)
    store_events(store, EVENTS)
    settings = Settings(data_dir=tmp_path_factory.mktemp("acc"), clickhouse_url=store.url,
                        clickhouse_database=store.database, jwt_secret=SECRET, api_rate_per_second=0)
    with TestClient(create_app(settings, store), raise_server_exceptions=False) as c:
        yield c, settings
    store.client().command(f"DROP DATABASE IF EXISTS {store.database} SYNC")


def _tok(org: str = "acme", role: str = "org_owner", workspaces: list[str] | None = None,
         permissions: tuple[str, ...] = ("audit:read", "audit:export"), exp_delta: int = 3600,
         key: str = SECRET) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "u-x", "email": "x@example.com", "org_id": org, "role": role,
                       "workspaces": workspaces or [], "permissions": list(permissions), "iat": now - 10,
                       "exp": now + exp_delta}, key, algorithm="HS256")


def _visible(org: str, workspaces: list[str] | None) -> list[dict[str, Any]]:
    return [e for e in EVENTS if e["org_id"] == org and (workspaces is None or e["workspace_id"] in workspaces)]


PRINCIPALS: dict[str, tuple[str | None, list[dict[str, Any]] | int]] = {
    "org_owner": (_tok(), _visible("acme", None)),
    "workspace_admin_w1": (_tok(role="workspace_admin", workspaces=["w1"]), _visible("acme", ["w1"])),
    # a blank id grants nothing (not the events without a workspace, nor their e-mails in autocomplete)
    "workspace_admin_blank_w1": (_tok(role="workspace_admin", workspaces=["", "w1", " "]), _visible("acme", ["w1"])),
    "no_audit_read": (_tok(permissions=()), 403),
    "other_org_owner": (_tok(org="globex"), _visible("globex", None)),
    "no_token": (None, 401),
    "expired": (_tok(exp_delta=-3600), 401),
    "wrong_key": (_tok(key="not-the-secret-0123456789abcdef012345"), 401),
}
ENDPOINTS = ["list", "detail", "export", "actors", "stats"]
W2_EVENT = next(e for e in EVENTS if e["workspace_id"] == "w2")
W1_EVENT = next(e for e in EVENTS if e["workspace_id"] == "w1")
GX_EVENT = next(e for e in EVENTS if e["org_id"] == "globex")


def _call(client: TestClient, endpoint: str, tok: str | None, event_id: str | None = None) -> Any:
    h = auth(tok) if tok else {}
    params = {"start": _ts(60 * 24), "end": _ts(0)}
    if endpoint == "list":
        return client.get("/v1/events", params={**params, "limit": 1000}, headers=h)
    if endpoint == "detail":
        return client.get(f"/v1/events/{event_id}", headers=h)
    if endpoint == "export":
        return client.get("/v1/events/export", params={**params, "format": "csv"}, headers=h)
    if endpoint == "actors":
        return client.get("/v1/actors", params={"prefix": "us"}, headers=h)
    return client.get("/v1/stats", params={**params, "interval": "hour", "group_by": "actor_email"}, headers=h)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_matrix(world: tuple[TestClient, Settings], who: str, endpoint: str) -> None:
    client, _ = world
    tok, expected = PRINCIPALS[who]
    if isinstance(expected, int):
        r = _call(client, endpoint, tok, W1_EVENT["event_id"])
        assert r.status_code == expected, r.text
        assert r.json()["error"]["code"] == {401: "unauthorized", 403: "forbidden"}[expected]
        if expected == 401:
            assert r.headers["www-authenticate"] == "Bearer"
        return
    ids = {e["event_id"] for e in expected}
    emails = {e["actor"]["email"] for e in expected}
    if endpoint == "list":
        r = _call(client, endpoint, tok)
        assert r.status_code == 200
        got = [e["event_id"] for e in r.json()["data"]]
        assert set(got) == ids and len(got) == len(ids)
    elif endpoint == "detail":
        for ev in (W1_EVENT, W2_EVENT, GX_EVENT):
            r = _call(client, endpoint, tok, ev["event_id"])
            if ev["event_id"] in ids:
                assert r.status_code == 200 and r.json()["event_id"] == ev["event_id"]
            else:  # another tenant's event: 404, exactly like an unknown id
                assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert _call(client, endpoint, tok, str(uuid.uuid4())).status_code == 404
    elif endpoint == "export":
        r = _call(client, endpoint, tok)
        assert r.status_code == 200
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert {row["event_id"] for row in rows} == ids and len(rows) == len(ids)
    elif endpoint == "actors":
        r = _call(client, endpoint, tok)
        assert r.status_code == 200
        assert {a["email"] for a in r.json()["data"]} == emails
    else:
        r = _call(client, endpoint, tok)
        assert r.status_code == 200
        body = r.json()
        assert body["total"] == len(ids)
        assert {(g["key"], g["total"]) for g in body["top"]} == {
            (m, sum(1 for e in expected if e["actor"]["email"] == m)) for m in emails}


def test_export_needs_audit_export(world: tuple[TestClient, Settings]) -> None:
    client, _ = world
    tok = _tok(permissions=("audit:read",))
    r = client.get("/v1/events/export", headers=auth(tok))
    assert r.status_code == 403 and "audit:export" in r.json()["error"]["message"]
    assert client.get("/v1/events", headers=auth(tok)).status_code == 200


def test_filters_naming_another_tenant_are_forbidden(world: tuple[TestClient, Settings]) -> None:
    client, _ = world
    admin = auth(_tok(role="workspace_admin", workspaces=["w1"]))
    r = client.get("/v1/events", params={"workspace_id": "w2"}, headers=admin)
    assert r.status_code == 403 and r.json()["error"]["field"] == "workspace_id"
    for path in ("/v1/events", "/v1/events/export", "/v1/stats"):
        r = client.get(path, params={"org_id": "globex"}, headers=auth(_tok()))
        assert r.status_code == 403 and r.json()["error"]["field"] == "org_id"
    # naming what you may see only narrows
    r = client.get("/v1/events", params={"org_id": "acme", "workspace_id": "w2", "start": _ts(60 * 24)},
                   headers=auth(_tok()))
    assert {e["workspace_id"] for e in r.json()["data"]} == {"w2"}


def test_token_claims_are_checked(world: tuple[TestClient, Settings]) -> None:
    client, _ = world
    now = int(time.time())
    base = {"sub": "u", "email": "u@example.com", "org_id": "acme", "role": "org_owner",
            "permissions": ["audit:read"], "exp": now + 60}
    bad = [
        {**base, "role": "superuser"},
        {k: v for k, v in base.items() if k != "exp"},
        {k: v for k, v in base.items() if k != "org_id"},
        {**base, "permissions": "audit:read"},
        {**base, "workspaces": "w1"},
        {**base, "exp": str(now + 60)},
        {**base, "nbf": True},
        {**base, "email": "not-an-email"},
        {**base, "sub": "s" * 257},
    ]
    for claims in bad:
        r = client.get("/v1/events", headers=auth(jwt.encode(claims, SECRET, algorithm="HS256")))
        assert r.status_code == 401, claims
    none_alg = jwt.encode(base, None, algorithm="none")
    assert client.get("/v1/events", headers=auth(none_alg)).status_code == 401
    assert client.get("/v1/events", headers=auth("garbage")).status_code == 401
    assert client.get("/v1/events", headers={"Authorization": f"Basic {SECRET}"}).status_code == 401
    # small clock skew is tolerated (leeway), more is not
    skew = {**base, "exp": now - 5}
    assert client.get("/v1/events", headers=auth(jwt.encode(skew, SECRET, algorithm="HS256"))).status_code == 200


# ----- property: a workspace admin never sees another workspace's event ----------------------------------------
_cat = get_catalog()
_texts = st.sampled_from(["us-w1@acme.example", "us-w2@acme.example", "us-gx@globex.example", "w1", "w2", "g1",
                          "event", "name 1", "vm", "' OR 1=1 --", "%", "_", "\\", "ÄÖ", "acme"])
_filters = st.fixed_dictionaries({}, optional={
    "scope": st.sampled_from(list(_cat.scopes)),
    "status": st.sampled_from(["SUCCESS", "FAILED"]),
    "actor_email": _texts, "actor_id": st.sampled_from(["u-us-w1", "u-us-w2", "u-us-gx"]),
    "ip": st.sampled_from([f"198.51.100.{i}" for i in range(4)]),
    "target": _texts, "q": _texts, "workspace_id": st.sampled_from(["w1"]),
    "start": st.sampled_from([_ts(60 * 24 * 30), _ts(60), _ts(200)]),
    "org_id": st.sampled_from(["acme"]),
    "limit": st.integers(1, 5),
})


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=_filters, endpoint=st.sampled_from(["list", "export", "stats", "actors"]))
def test_workspace_admin_never_sees_another_workspace(world: tuple[TestClient, Settings], params: dict[str, Any],
                                                      endpoint: str) -> None:
    client, _ = world
    h = auth(_tok(role="workspace_admin", workspaces=["w1"]))
    allowed_ids = {e["event_id"] for e in _visible("acme", ["w1"])}
    allowed_emails = {e["actor"]["email"] for e in _visible("acme", ["w1"])}
    if endpoint == "list":
        seen: list[str] = []
        cursor = None
        for _ in range(20):
            r = client.get("/v1/events", params={**params, **({"cursor": cursor} if cursor else {})}, headers=h)
            assert r.status_code in (200, 422), r.text
            if r.status_code != 200:
                return
            seen += [e["event_id"] for e in r.json()["data"]]
            assert {e["workspace_id"] for e in r.json()["data"]} <= {"w1"}
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
        assert set(seen) <= allowed_ids and len(seen) == len(set(seen))
    elif endpoint == "export":
        r = client.get("/v1/events/export", params={**params, "format": "ndjson"}, headers=h)
        assert r.status_code in (200, 422), r.text
        if r.status_code == 200:
            import json

            got = [json.loads(line) for line in r.text.splitlines()]
            assert {e["event_id"] for e in got} <= allowed_ids
            assert {e["workspace_id"] for e in got} <= {"w1"}
    elif endpoint == "stats":
        r = client.get("/v1/stats", params={**params, "group_by": "actor_email"}, headers=h)
        assert r.status_code in (200, 422), r.text
        if r.status_code == 200:
            assert r.json()["total"] <= len(allowed_ids)
            assert {g["key"] for g in r.json()["top"]} <= allowed_emails
    else:
        prefix = params.get("actor_email") or params.get("q") or "us"
        r = client.get("/v1/actors", params={"prefix": prefix}, headers=h)
        assert r.status_code in (200, 422), r.text
        if r.status_code == 200:
            assert {a["email"] for a in r.json()["data"]} <= allowed_emails
