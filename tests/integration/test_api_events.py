"""GET /v1/events and /v1/events/{id}: every filter, keyword search, keyset pagination stable under inserts,
dedup of re-sent events, validation errors in the one error shape; plus catalog, health and metrics."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from auditlogkit.query_api.models import StatsOut
from auditlogkit.query_api.read import cursor as cursors
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.settings import Settings
from auditlogkit.server.signing import ServerKeys
from auditlogkit.server.store import Store
from tests.factories import make_event, random_events
from tests.integration.test_api_helpers import app_client, auth, store_events, token

NOW = datetime.now(UTC)


def _ts(minutes: float) -> str:
    return (NOW - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _ids(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return [e["event_id"] for e in r.json()["data"]]


@pytest.fixture
def api(settings: Settings, store: Store) -> Iterator[TestClient]:
    with app_client(settings, store) as c:
        yield c


@pytest.fixture(scope="module")
def shared_api(chdb_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """One app on one empty database for the tests that only look at validation."""
    store = Store(chdb_url, f"ev_{uuid.uuid4().hex[:10]}")
    migrate(store)
    settings = Settings(data_dir=tmp_path_factory.mktemp("ev"), clickhouse_url=store.url,
                        clickhouse_database=store.database, jwt_secret="shared-secret-0123456789abcdef0123")
    with app_client(settings, store) as c:
        yield c, auth(token(settings))
    store.client().command(f"DROP DATABASE IF EXISTS {store.database} SYNC")


@pytest.fixture
def owner(settings: Settings) -> dict[str, str]:
    return auth(token(settings))


def test_each_filter_narrows_exactly(api: TestClient, store: Store, owner: dict[str, str]) -> None:
    evs = random_events(300, seed=5, orgs=("acme",), days=6)
    store_events(store, evs)

    def expect(pred: Any) -> set[str]:
        return {e["event_id"] for e in evs if pred(e)}

    cases: list[tuple[dict[str, Any], Any]] = [
        ({"scope": "service"}, lambda e: e["scope"] == "service"),
        ({"scope": "workspace", "category": "member"}, lambda e: e["scope"] == "workspace" and e["category"] == "member"),
        ({"category": "member"}, lambda e: e["category"] == "member"),
        ({"action": ["vm.create", "vm.delete"]}, lambda e: e["action"] in ("vm.create", "vm.delete")),
        ({"status": "FAILED"}, lambda e: e["status"] == "FAILED"),
        ({"actor_email": "user7@acme.example"}, lambda e: e["actor"]["email"] == "user7@acme.example"),
        ({"actor_id": "u-8"}, lambda e: e["actor"]["id"] == "u-8"),
        ({"ip": "198.51.100.9"}, lambda e: e["actor"]["ip"] == "198.51.100.9"),
        ({"ip": "2001:0db8:0000::00a"}, lambda e: e["actor"]["ip"] == "2001:db8::a"),  # normalised like stored
        ({"workspace_id": "acme-ws2"}, lambda e: e["workspace_id"] == "acme-ws2"),
        ({"target": "vm-12"}, lambda e: e["target"]["id"] == "vm-12"),
        ({"start": _ts(60 * 24 * 2), "end": _ts(60 * 24)},
         lambda e: _ts(60 * 24 * 2) <= e["occurred_at"] <= _ts(60 * 24)),
        ({"status": "SUCCESS", "scope": "service", "workspace_id": "acme-ws1"},
         lambda e: e["status"] == "SUCCESS" and e["scope"] == "service" and e["workspace_id"] == "acme-ws1"),
    ]
    for params, pred in cases:
        got = _ids(api.get("/v1/events", params={"limit": 1000, **params}, headers=owner))
        assert set(got) == expect(pred), params
        assert len(got) == len(set(got))
    target_name = next(e["target"]["name"] for e in evs)
    got = _ids(api.get("/v1/events", params={"target": target_name}, headers=owner))
    assert set(got) == expect(lambda e: e["target"]["name"] == target_name)


def test_default_range_is_the_last_7_days_and_order_is_newest_first(api: TestClient, store: Store,
                                                                    owner: dict[str, str]) -> None:
    old = make_event(occurred_at=_ts(60 * 24 * 8))
    recent = [make_event(occurred_at=_ts(m)) for m in (5, 50, 500, 60 * 24 * 6)]
    store_events(store, [old, *recent])
    got = _ids(api.get("/v1/events", headers=owner))
    assert got == [e["event_id"] for e in recent]
    r = api.get("/v1/events", params={"start": _ts(60 * 24 * 9)}, headers=owner)
    assert old["event_id"] in _ids(r)


def test_keyword_search(api: TestClient, store: Store, owner: dict[str, str]) -> None:
    evs = [
        make_event(description="Rebooted Ünïcode-Box", target={"id": "vm-1", "name": "x"}),
        make_event(actor={"email": "Kim.Lee@Acme.example"}, description="d", target={"id": "t", "name": "n"}),
        make_event(target={"id": "pol-42", "name": "AdminAccess"}, scope="organization", category="policy",
                   action="policy.attach", description="z", workspace_id=None),
        make_event(description="100% done_ok", target={"id": "a", "name": "b"}),
        make_event(scope="billing", category="voucher", action="voucher.redeem", description="r",
                   target={"id": "v", "name": "w"}, workspace_id=None),
    ]
    store_events(store, evs)

    def q(text: str) -> list[str]:
        return _ids(api.get("/v1/events", params={"q": text}, headers=owner))

    assert q("ünïcode-box") == [evs[0]["event_id"]]  # case-insensitive, Unicode
    assert q("kim.lee@acme") == [evs[1]["event_id"]]  # e-mail
    assert q("POL-42") == [evs[2]["event_id"]]  # target id
    assert q("adminaccess") == [evs[2]["event_id"]]  # target name
    assert set(q("attach policy")) == {evs[2]["event_id"]}  # action label "Attach Policy"
    assert set(q("Vouchers")) == {evs[4]["event_id"]}  # category label
    assert set(q("voucher.redeem")) == {evs[4]["event_id"]}  # action code
    assert q("100%") == [evs[3]["event_id"]]  # LIKE metacharacters are literal
    assert q("e_b") == []  # "_" is not a wildcard ("code-box" would match one)
    assert q("done_ok") == [evs[3]["event_id"]]
    assert q("nothing-like-this") == []


def test_pagination_is_stable_while_events_arrive(api: TestClient, store: Store, owner: dict[str, str]) -> None:
    evs = random_events(230, seed=9, orgs=("acme",), days=3)
    # several events share one timestamp: the event_id tie-break must neither skip nor repeat them
    same = _ts(100)
    for e in evs[:30]:
        e["occurred_at"] = same
    store_events(store, evs)
    seen: list[str] = []
    cursor = None
    params = {"start": _ts(60 * 24 * 4), "end": _ts(0), "limit": 25}
    pages = 0
    while True:
        r = api.get("/v1/events", params={**params, **({"cursor": cursor} if cursor else {})}, headers=owner)
        page = r.json()
        seen += [e["event_id"] for e in page["data"]]
        times = [(e["occurred_at"]) for e in page["data"]]
        assert times == sorted(times, reverse=True)
        # between pages: newer events arrive and older events are re-sent (duplicates of stored ids)
        store_events(store, [make_event(occurred_at=_ts(1)), *evs[pages * 10: pages * 10 + 3]])
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == len(evs)
    assert set(seen) == {e["event_id"] for e in evs}
    assert pages == 10


def test_resent_event_is_one_event(api: TestClient, store: Store, owner: dict[str, str]) -> None:
    ev = make_event()
    for _ in range(3):
        store_events(store, [ev])
    assert _ids(api.get("/v1/events", headers=owner)) == [ev["event_id"]]
    stats = api.get("/v1/stats", headers=owner).json()
    assert stats["total"] == 1
    export = api.get("/v1/events/export", params={"format": "ndjson"}, headers=owner)
    assert len(export.text.splitlines()) == 1
    assert api.get(f"/v1/events/{ev['event_id']}", headers=owner).json()["detail"] == ev["detail"]


def test_many_copies_of_one_event_still_page_correctly(api: TestClient, store: Store, owner: dict[str, str]) -> None:
    a, b, c = make_event(occurred_at=_ts(1)), make_event(occurred_at=_ts(2)), make_event(occurred_at=_ts(3))
    store_events(store, [b, c])
    for _ in range(25):  # more copies than the page query's slack: exercises the FINAL fallback
        store_events(store, [a])
    seen, cursor = [], None
    for _ in range(5):
        r = api.get("/v1/events", params={"limit": 1, **({"cursor": cursor} if cursor else {})}, headers=owner)
        seen += _ids(r)
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert seen == [a["event_id"], b["event_id"], c["event_id"]]
    assert _ids(api.get("/v1/events", params={"limit": 2}, headers=owner)) == [a["event_id"], b["event_id"]]


def test_detail_has_everything(api: TestClient, store: Store, owner: dict[str, str]) -> None:
    ev = make_event(detail={"before": {"a": [1, 2, {"b": None}]}, "after": {"ünï": "çødé"}})
    store_events(store, [ev])
    got = api.get(f"/v1/events/{ev['event_id']}", headers=owner).json()
    for k in ("event_id", "org_id", "workspace_id", "scope", "category", "action", "status", "description",
              "source", "request_id", "detail"):
        assert got[k] == ev[k], k
    assert got["actor"] == ev["actor"] and got["target"] == ev["target"]
    assert got["occurred_at"].endswith("Z") and got["received_at"].endswith("Z")
    assert (got["scope_label"], got["category_label"], got["action_label"]) == ("Service", "VM", "Delete VM")
    r = api.get(f"/v1/events/{uuid.uuid4()}", headers=owner)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = api.get("/v1/events/not-a-uuid", headers=owner)
    assert r.status_code == 422 and r.json()["error"]["field"] == "event_id"


@pytest.mark.parametrize(("params", "field", "needle"), [
    ({"scope": "bill"}, "scope", "valid: organization"),
    ({"scope": "service", "category": "member"}, "category", "valid: vm"),
    ({"category": "nope"}, "category", "valid:"),
    ({"action": ["vm.create", "vm.explode"]}, "action", "valid:"),
    ({"scope": "billing", "action": "vm.create"}, "action", "credit.grant"),
    ({"status": "OK"}, "status", "SUCCESS"),
    ({"limit": 0}, "limit", "1"),
    ({"limit": 1001}, "limit", "1000"),
    ({"limit": "ten"}, "limit", "integer"),
    ({"start": "yesterday"}, "start", "datetime"),
    ({"start": "0999-12-25T00:00:00Z"}, "start", "between"),
    ({"end": "9999-12-31T23:59:59+14:00"}, "end", "between"),
    ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "start", "after"),
    ({"ip": "300.1.1.1"}, "ip", "IPv4"),
    ({"actor_email": "a" * 600}, "actor_email", "512"),
    ({"q": "nul\x00byte"}, "q", "NUL"),
])
def test_invalid_parameters_are_422_naming_the_field(shared_api: tuple[TestClient, dict[str, str]],
                                                     params: dict[str, Any], field: str, needle: str) -> None:
    api, owner = shared_api
    r = api.get("/v1/events", params=params, headers=owner)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_parameter" and err["field"] == field and needle in err["message"], err


def test_a_cursor_this_server_did_not_issue_is_400(api: TestClient, settings: Settings, store: Store,
                                                  owner: dict[str, str]) -> None:
    """Edited, truncated, signed with another server secret, or the old form signed with the constant that was
    in the source: 400 ``invalid_cursor`` and no rows. Another app of the same data directory shares the secret."""
    store_events(store, random_events(5, seed=2, orgs=("acme",)))
    cur = api.get("/v1/events", params={"limit": 2}, headers=owner).json()["next_cursor"]
    assert cur
    with app_client(settings, store) as same_dir:
        assert len(same_dir.get("/v1/events", params={"limit": 2, "cursor": cur}, headers=owner).json()["data"]) == 2
    body = json.dumps({"t": 4102444800000, "id": str(uuid.uuid4())}, separators=(",", ":"))  # a page from 2100
    old_form = json.dumps({"v": 1, "k": body, "m": hmac.new(b"auditlog-cursor-v1", body.encode(),
                                                            hashlib.sha256).hexdigest()[:16]})
    another = cursors.encode(datetime(2100, 1, 1, tzinfo=UTC), uuid.uuid4(),
                             ServerKeys("another-server-secret-0123456789abcdef"))
    for bad in ("bm90LWEtY3Vyc29y", cur[:-3], cur[:10] + ("A" if cur[10] != "A" else "B") + cur[11:],
                cur + "x" * 600, another,
                base64.urlsafe_b64encode(old_form.encode()).decode().rstrip("=")):
        r = api.get("/v1/events", params={"cursor": bad}, headers=owner)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["field"] == "cursor" and r.json()["error"]["code"] == "invalid_cursor"


def test_actors_autocomplete(api: TestClient, store: Store, owner: dict[str, str]) -> None:
    evs = [make_event(actor={"email": f"{n}@acme.example"}) for n in ("kim", "Kimberly", "kiran", "lee", "Émile")]
    evs += [make_event(actor={"email": f"ki{i:02d}@acme.example"}) for i in range(30)]
    store_events(store, evs)
    r = api.get("/v1/actors", params={"prefix": "KIM"}, headers=owner).json()
    assert [a["email"] for a in r["data"]] == ["kim@acme.example", "Kimberly@acme.example"]
    r = api.get("/v1/actors", params={"prefix": "ki"}, headers=owner).json()
    assert len(r["data"]) == 20
    r = api.get("/v1/actors", params={"prefix": "éM"}, headers=owner).json()  # non-ASCII case folding
    assert [a["email"] for a in r["data"]] == ["Émile@acme.example"]
    for bad in ("k", " k ", ""):
        r = api.get("/v1/actors", params={"prefix": bad}, headers=owner)
        assert r.status_code == 422 and r.json()["error"]["field"] == "prefix"


def test_stats_buckets_are_dense_and_add_up(api: TestClient, store: Store, owner: dict[str, str]) -> None:
    evs = random_events(120, seed=4, orgs=("acme",), days=3)
    store_events(store, evs)
    store_events(store, random_events(30, seed=5, orgs=("globex",), days=3))  # another tenant's: never counted
    start, end = _ts(60 * 24 * 3 + 60), _ts(0)
    r = api.get("/v1/stats", params={"interval": "hour", "start": start, "end": end}, headers=owner).json()
    assert len(r["buckets"]) in (74, 75)
    assert sum(b["total"] for b in r["buckets"]) == r["total"] == 120
    assert r["success"] + r["failed"] == 120
    assert r["failed"] == sum(1 for e in evs if e["status"] == "FAILED")
    day = api.get("/v1/stats", params={"interval": "day", "start": start, "end": end}, headers=owner).json()
    assert day["total"] == 120 and all(b["start"].endswith("T00:00:00.000Z") for b in day["buckets"])
    StatsOut.model_validate(day)  # the answer is serialized without response-model validation: its shape holds
    for interval, floor in (("week", "Monday"), ("month", "1st")):
        long = api.get("/v1/stats", params={"interval": interval, "start": "1970-01-01T00:00:00Z"},
                       headers=owner).json()
        StatsOut.model_validate(long)
        firsts = [datetime.fromisoformat(b["start"]) for b in long["buckets"]]
        assert firsts[0] <= datetime(1970, 1, 1, tzinfo=UTC) < firsts[1]
        assert all((t.weekday() == 0) if floor == "Monday" else (t.day == 1) for t in firsts)
        assert firsts == sorted(set(firsts)) and firsts[-1] <= datetime.now(UTC)
        assert long["total"] == sum(b["total"] for b in long["buckets"]) == 120
    r2 = api.get("/v1/stats", params={"interval": "minute"}, headers=owner)
    assert r2.status_code == 422 and r2.json()["error"]["field"] == "interval"
    r3 = api.get("/v1/stats", params={"interval": "hour", "start": "2000-01-01T00:00:00Z"}, headers=owner)
    assert r3.status_code == 422 and "day, week, month" in r3.json()["error"]["message"]
    r4 = api.get("/v1/stats", params={"interval": "day", "start": "1970-01-01T00:00:00Z"}, headers=owner)
    assert r4.status_code == 422 and r4.json()["error"]["field"] == "interval"


def test_stats_group_by_scope_lists_the_scopes_of_the_callers_view(api: TestClient, settings: Settings, store: Store,
                                                                    owner: dict[str, str]) -> None:
    """What the page asks to offer a workspace admin only the scopes it can see: org-level scopes (no workspace)
    and scopes present only in other workspaces or other orgs are not among its groups."""
    first = {s: next((c, a) for c in get_catalog().scopes[s].categories.values() for a in c.actions)
             for s in ("organization", "authentication", "billing", "workspace", "service")}

    def ev(scope: str, ws: str | None, org: str = "acme", status: str = "SUCCESS") -> dict[str, Any]:
        cat, act = first[scope]
        return make_event(org_id=org, workspace_id=ws, scope=scope, category=cat.code, action=act, status=status,
                          target={"type": cat.code})

    store_events(store, [ev("service", "ml-research"), ev("service", "ml-research", status="FAILED"),
                         ev("service", "data-platform"), ev("workspace", "ml-research"),
                         ev("organization", None), ev("organization", None), ev("organization", None),
                         ev("authentication", "data-platform"), ev("billing", None, org="globex")])
    params = {"interval": "day", "start": _ts(60 * 24 * 400), "end": _ts(0), "group_by": "scope", "top": 100}
    r = api.get("/v1/stats", params=params, headers=owner)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["group_by"] == "scope"
    assert [(g["key"], g["total"], g["failed"]) for g in body["top"]] == [
        ("organization", 3, 0), ("service", 3, 1), ("authentication", 1, 0), ("workspace", 1, 0)]
    admin = auth(token(settings, role="workspace_admin", workspaces=["ml-research"]))
    body = api.get("/v1/stats", params=params, headers=admin).json()
    assert [(g["key"], g["total"], g["failed"]) for g in body["top"]] == [("service", 2, 1), ("workspace", 1, 0)]
    assert body["total"] == 3
    r = api.get("/v1/stats", params={**params, "group_by": "category"}, headers=owner)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_parameter" and err["field"] == "group_by", err
    assert all(v in err["message"] for v in ("actor_email", "ip", "scope")), err


def test_catalog_health_metrics_docs(api: TestClient, store: Store, owner: dict[str, str]) -> None:
    assert api.get("/v1/catalog").status_code == 401
    cat = api.get("/v1/catalog", headers=owner).json()
    assert [s["code"] for s in cat["scopes"]][:2] == ["organization", "authentication"]
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json()["store"] == "ok"
    api.get("/v1/events", headers=owner)
    store_events(store, [make_event()])
    api.get("/v1/events/export", headers=owner)
    m = api.get("/metrics").text
    assert 'auditlog_api_requests_total{method="GET",route="/v1/events",status="200"}' in m
    assert "auditlog_api_request_seconds_bucket" in m and 'auditlog_api_rows_exported_total{format="csv"}' in m
    assert api.get("/openapi.json").json()["paths"]["/v1/events"]["get"]
    assert api.get("/docs").status_code == 200
    assert api.get("/").status_code == 200 and "html" in api.get("/").headers["content-type"]
    r = api.get("/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = api.post("/v1/events", headers=owner)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert api.delete(f"/v1/events/{uuid.uuid4()}", headers=owner).status_code == 405


def test_readyz_reports_consumer_status(settings: Settings, store: Store) -> None:
    from auditlogkit.query_api.core.app import create_app

    with TestClient(create_app(settings, store, consumer_status=lambda: {"ready": True, "lag": 0})) as c:
        assert c.get("/readyz").json() == {"status": "ok", "store": "ok", "self_audit": "off",
                                           "consumer": {"ready": True, "lag": 0}}

    def broken() -> dict[str, Any]:
        raise RuntimeError("consumer gone")

    with TestClient(create_app(settings, store, consumer_status=broken)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and "consumer gone" in r.json()["consumer"]["error"]


def test_access_log_names_the_caller_but_never_the_token(api: TestClient, settings: Settings) -> None:
    from structlog.testing import capture_logs

    tok = token(settings, sub="u-logged")
    with capture_logs() as logs:
        api.get("/v1/events", params={"q": "secret-term"}, headers=auth(tok))
        api.get("/v1/events", headers=auth(tok + "x"))
    access = [e for e in logs if e["event"] == "api.request"]
    assert [(e["route"], e["status"]) for e in access] == [("/v1/events", 200), ("/v1/events", 401)]
    assert access[0]["sub"] == "u-logged" and access[0]["org_id"] == "acme" and access[0]["ms"] >= 0
    text = repr(logs)
    assert tok not in text and tok.split(".")[1] not in text and "secret-term" not in text


def test_ip_filter_matches_whatever_spelling_of_the_address(api: TestClient, settings: Settings, store: Store) -> None:
    """Stored and filter values share one normalisation (auditlogkit.schemas.event.normal_ip), so spellings agree."""
    evs = [make_event(actor={"ip": "2001:DB8:0:0:0:0:0:1"}), make_event(actor={"ip": "::ffff:203.0.113.9"}),
           make_event(actor={"ip": "203.0.113.9"})]
    store_events(store, evs)
    h = auth(token(settings))
    for spelling, expected in [("2001:db8::1", evs[0]), ("2001:0DB8::0:1", evs[0]), ("::FFFF:CB00:7109", evs[1])]:
        r = api.get("/v1/events", params={"ip": spelling}, headers=h)
        assert r.status_code == 200 and _ids(r) == [expected["event_id"]], (spelling, r.text)
    bad = api.get("/v1/events", params={"ip": "2001:db8::1%eth0"}, headers=h)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "ip"


@pytest.mark.parametrize(("path", "params", "name"), [
    ("/v1/events", {"target_id": "vm-1"}, "target_id"),  # the filter is "target": misspelt, it would filter nothing
    ("/v1/events", {"status": "FAILED", "statuss": "x"}, "statuss"),
    ("/v1/events/export", {"format": "csv", "org": "globex"}, "org"),
    ("/v1/stats", {"interval": "day", "scope_id": "service"}, "scope_id"),
    ("/v1/actors", {"prefix": "al", "limit": "5"}, "limit"),
    ("/v1/integrity", {"org": "globex"}, "org"),
    ("/v1/catalog", {"lang": "fr"}, "lang"),
])
def test_an_unknown_query_parameter_is_422_not_silently_ignored(shared_api: tuple[TestClient, dict[str, str]],
                                                                 path: str, params: dict[str, Any], name: str) -> None:
    api, owner = shared_api
    r = api.get(path, params=params, headers=owner)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == name and "unknown query parameter" in err["message"], err
    assert err["code"] == "invalid_parameter"
    assert api.get(path, params={k: v for k, v in params.items() if k != name}, headers=owner).status_code == 200
    assert api.get(path, params=params).status_code == 401  # no token: refused before anything is said of it


def test_a_hostile_unknown_query_parameter_is_422_with_a_bounded_echo(shared_api: tuple[TestClient, dict[str, str]]
                                                                      ) -> None:
    api, owner = shared_api
    for raw in ("x" * 20_000 + "=1", "%ff%fe=1", "%00=1", "&".join(f"p{i}=1" for i in range(2_000))):
        r = api.get(f"/v1/events?{raw}", headers=owner)
        assert r.status_code == 422, (raw[:40], r.text[:300])
        assert len(r.content) < 2_000 and r.json()["error"]["code"] == "invalid_parameter"
