"""Hostile input: SQL-injection-shaped values in every string parameter give correct results or 422, never a 500
or another tenant's rows; schemathesis over every operation of /openapi.json, with valid tokens of both roles,
finds no 5xx and no 4xx without the JSON error body."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from auditlogkit.query_api.core.app import create_app
from auditlogkit.schemas.rows import EVENTS_TABLE
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.test_api_helpers import auth, store_events, token

HOSTILE = [
    "' OR '1'='1", "' OR 1=1 --", "acme' --", "\\", "\\'", "'; DROP TABLE audit_events; --", "--", ";",
    "\x00", "a\x00b", "{s_org:String}", "') OR ('a'='a", "%", "_", "%' OR '%'='", "\"", "`", "\n", "\r\n\t",
    "Ünï©ødé 🚀", "𝕏" * 50, "globex", "*", "NULL", "null", "1e308", "-1", "=cmd|' /C calc'!A0",
]
STRING_PARAMS = ["scope", "category", "action", "actor_email", "actor_id", "ip", "workspace_id", "target", "q",
                 "org_id", "cursor", "start", "end", "status"]
NAUGHTY_TARGET = "O'Brien \\ --; 🚀 \" %_"
SECRET = "robust-secret-0123456789abcdef0123456789"


@pytest.fixture(scope="module")
def world(chdb_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Settings, Store]]:
    store = Store(chdb_url, f"rob_{uuid.uuid4().hex[:10]}")
    migrate(store)
    evs = [make_event(org_id=org, workspace_id=ws, target={"id": f"t-{org}-{ws}", "name": f"n-{org}"},
                      description=f"{org} {ws}") for org, ws in
           [("acme", "w1"), ("acme", "w1"), ("acme", "w2"), ("globex", "w1"), ("globex", None)]]
    evs.append(make_event(org_id="acme", workspace_id="w1", target={"id": NAUGHTY_TARGET, "name": "x"},
                          actor={"email": "o.brien@acme.example"}, description=f"touched {NAUGHTY_TARGET}"))
    store_events(store, evs)
    settings = Settings(data_dir=tmp_path_factory.mktemp("rob"), clickhouse_url=store.url,
                        clickhouse_database=store.database, jwt_secret=SECRET, api_rate_per_second=0)
    with TestClient(create_app(settings, store), raise_server_exceptions=False) as c:
        yield c, settings, store
    store.client().command(f"DROP DATABASE IF EXISTS {store.database} SYNC")


def _rows(r: Any, path: str) -> list[dict[str, Any]]:
    if path == "/v1/events":
        return list(r.json()["data"])
    return [json.loads(line) for line in r.text.splitlines()]


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/export", "/v1/stats"])
@pytest.mark.parametrize("role", ["org_owner", "workspace_admin"])
def test_hostile_values_in_every_string_parameter(world: tuple[TestClient, Settings, Store], path: str,
                                                  role: str) -> None:
    client, settings, store = world
    h = auth(token(settings, role=role, workspaces=["w1"] if role == "workspace_admin" else None))
    for name in STRING_PARAMS:
        for value in HOSTILE:
            params: dict[str, Any] = {name: value}
            if path.endswith("export"):
                params["format"] = "ndjson"
            r = client.get(path, params=params, headers=h)
            ok = (200, 403, 422, 400) if name == "cursor" else (200, 403, 422)  # a cursor not issued here: 400
            assert r.status_code in ok, (name, value, r.status_code, r.text[:300])
            assert r.headers["content-type"].startswith("application/json") or r.status_code == 200
            if r.status_code != 200:
                assert set(r.json()["error"]) == {"code", "message", "field"}
                continue
            if path == "/v1/stats":
                assert r.json()["total"] <= (4 if role == "org_owner" else 3)
                continue
            for ev in _rows(r, path):
                assert ev["org_id"] == "acme", (name, value)
                if role == "workspace_admin":
                    assert ev["workspace_id"] == "w1", (name, value)
    # nothing was dropped or changed
    assert store.client().query(f"SELECT count() FROM {EVENTS_TABLE}").result_rows[0][0] == 6


def test_hostile_values_elsewhere(world: tuple[TestClient, Settings, Store]) -> None:
    client, settings, _ = world
    h = auth(token(settings))
    for value in HOSTILE:
        r = client.get("/v1/actors", params={"prefix": value}, headers=h)
        assert r.status_code in (200, 422), (value, r.text)
        if r.status_code == 200:
            assert all(a["email"].endswith("@acme.example") for a in r.json()["data"])
        r = client.get(f"/v1/events/{quote(value, safe='')}", headers=h)
        assert r.status_code in (404, 422), (value, r.text)
        r = client.get("/v1/stats", params={"group_by": value, "interval": value}, headers=h)
        assert r.status_code == 422


def test_quotes_and_backslashes_match_exactly(world: tuple[TestClient, Settings, Store]) -> None:
    client, settings, _ = world
    h = auth(token(settings))
    r = client.get("/v1/events", params={"target": NAUGHTY_TARGET}, headers=h)
    assert [e["target"]["id"] for e in r.json()["data"]] == [NAUGHTY_TARGET]
    r = client.get("/v1/events", params={"q": "o'brien \\ --; 🚀"}, headers=h)
    assert [e["target"]["id"] for e in r.json()["data"]] == [NAUGHTY_TARGET]
    r = client.get("/v1/actors", params={"prefix": "o.b"}, headers=h)
    assert [a["email"] for a in r.json()["data"]] == ["o.brien@acme.example"]


# ----- schemathesis ------------------------------------------------------------------------------------------
ST_EXAMPLES = 12  # per operation, role and generation mode: keeps this file well under a minute


def _operations(settings: Settings, store: Store) -> list[Any]:
    """Every operation of /openapi.json of an app of its own (a schema that does not load fails the test).

    Schemathesis runs the app's lifespan itself and ends it when the test ends, which closes the app's query
    threads: the module's shared client must not be that app."""
    schema: Any = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, store))
    results = list(schema.get_all_operations())
    assert all(isinstance(r, Ok) for r in results), [r for r in results if not isinstance(r, Ok)]
    return [r.ok() for r in results]


def json_error_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis check: a 4xx answer is JSON of exactly the shape ``{"error": {"code", "message", "field"}}``."""
    if not 400 <= response.status_code < 500:
        return None
    where = f"{case.method} {case.formatted_path} {case.query or ''} -> {response.status_code}"
    ctype = (response.headers.get("content-type") or [""])[0]
    assert ctype.startswith("application/json"), f"{where}: 4xx with content-type {ctype!r}"
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{where}: 4xx body is not JSON: {response.content[:200]!r}") from None
    assert isinstance(body, dict) and set(body) == {"error"}, f"{where}: {body!r}"
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"code", "message", "field"}, f"{where}: {body!r}"
    assert isinstance(err["code"], str) and err["code"], f"{where}: {body!r}"
    assert isinstance(err["message"], str) and err["message"], f"{where}: {body!r}"
    assert err["field"] is None or isinstance(err["field"], str), f"{where}: {body!r}"
    return True


def _ids(store: Store, org: str, workspace: str) -> set[str]:
    rows = store.client().query(f"SELECT toString(event_id) FROM {EVENTS_TABLE} WHERE org_id = {{o:String}} "
                                "AND workspace_id = {w:String}", parameters={"o": org, "w": workspace}).result_rows
    return {r[0] for r in rows}


def _cut_tail(case: Any) -> dict[str, float]:
    """A live tail that opens well never ends by itself: its body is cut after a second (its status and headers are
    what is checked), not after schemathesis' default 10 s read timeout."""
    return {"timeout": 1.0} if case.operation.path == "/v1/events/stream" else {}


@pytest.mark.parametrize("role", ["org_owner", "workspace_admin"])
def test_schemathesis_over_every_operation(world: tuple[TestClient, Settings, Store], role: str) -> None:
    """Every operation of /openapi.json, valid and invalid generated requests, with a valid token of ``role``:
    no 5xx, and every 4xx carries the JSON error body."""
    _, settings, store = world
    headers = auth(token(settings, role=role, workspaces=["w1"] if role == "workspace_admin" else None))
    operations = _operations(settings, store)
    paths = {op.path for op in operations}
    assert {"/v1/events", "/v1/events/{event_id}", "/v1/events/export", "/v1/actors", "/v1/stats"} <= paths, paths
    for op in operations:
        # an operation without any parameter (/healthz) has no invalid request to generate
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if list(op.iter_parameters()) else [])
        for mode in modes:
            @hsettings(max_examples=ST_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                       database=None, phases=[Phase.explicit, Phase.generate])
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                case.call_and_validate(headers=headers, checks=[not_a_server_error, json_error_body],
                                       **_cut_tail(case))

            run()
        if op.path == "/v1/events/{event_id}":  # generated ids are rarely UUIDs: the found / not found answers too
            w1_id = next(iter(_ids(store, "acme", "w1")))
            other_id = next(iter(_ids(store, "globex", "w1")))
            for event_id, status in ((w1_id, 200), (other_id, 404), (str(uuid.uuid4()), 404)):
                r = op.Case(path_parameters={"event_id": event_id}).call_and_validate(
                    headers=headers, checks=[not_a_server_error, json_error_body])
                assert r.status_code == status, (event_id, r.status_code)


def test_json_error_body_check_rejects_other_shapes(world: tuple[TestClient, Settings, Store]) -> None:
    """The custom check itself: it passes the API's real 4xx and fails a plain-text or differently shaped one."""
    _, settings, store = world
    op = next(op for op in _operations(settings, store) if op.path == "/v1/events")
    case = op.Case(query={"limit": 0})
    good = case.call(headers=auth(token(settings)))
    assert good.status_code == 422 and json_error_body(None, good, case) is True
    unauthorized = case.call()
    assert unauthorized.status_code == 401 and json_error_body(None, unauthorized, case) is True

    class Fake:
        def __init__(self, status: int, ctype: str, content: bytes) -> None:
            self.status_code, self.headers, self.content = status, {"content-type": [ctype]}, content

    for bad in (Fake(404, "text/plain", b"Not Found"), Fake(422, "application/json", b'{"detail": "x"}'),
                Fake(400, "application/json", b'{"error": {"code": "x", "message": "m"}}'),
                Fake(429, "application/json", b"not json")):
        with pytest.raises(AssertionError):
            json_error_body(None, bad, case)
    assert json_error_body(None, Fake(200, "text/plain", b"ok"), case) is None


@pytest.mark.parametrize("path", ["/v1/events", "/v1/stats", "/v1/events/export"])
def test_extreme_dates_are_422_not_500(world: tuple[TestClient, Settings, Store], path: str) -> None:
    """An end near year 1 (found by schemathesis: the default start, end - 7 days, overflowed) or far future."""
    client, settings, _ = world
    h = auth(token(settings))
    for params in ({"end": "0001-01-02T00:00:00Z"}, {"end": "0001-01-01T00:00:00+01:00"},
                   {"start": "9999-12-31T23:59:59Z"}, {"start": "0001-01-01T00:00:00Z", "end": "0001-01-03T00:00:00Z"}):
        r = client.get(path, params=params, headers=h)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"]["field"] in ("start", "end"), r.text
