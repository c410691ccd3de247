"""The page window (query_api/read/recent.py) against ClickHouse's own answer, on the real chDB engine.

Every page the window answers must be the page ``list_page`` returns for the same caller, filters and cursor; a
page it cannot answer exactly it must decline (None). Rows stored after the window was filled, late rows,
re-sent copies and other tenants' rows are the attacks on it.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from auditlogkit.query_api.read.events import list_page
from auditlogkit.query_api.read.filters import parse_filters
from auditlogkit.query_api.read.recent import PageWindow, window_for
from auditlogkit.query_api.security.principal import Principal
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.schemas.catalog import Catalog, get_catalog
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.test_api_helpers import app_client, auth, store_events, token

DETAIL_MAX = 60
OWNER = Principal(sub="o", email="o@acme.example", org_id="acme", role="org_owner")
WS_ADMIN = Principal(sub="w", email="w@acme.example", org_id="acme", role="workspace_admin", workspaces=("ws1",))
WORDS = ["Token rotated", "token", "DÉJÀ vu", "Kelvin \u212a sign", "100% done", "under_score", "vm-7 deleted",
         "Straße", "plain text"]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return get_catalog()


def _events(rng: random.Random, n: int, now: datetime, org: str = "acme", spread_s: int = 3 * 86400
            ) -> list[dict[str, Any]]:
    """Events with many equal timestamps (so ClickHouse's UUID order decides), NULL and set columns, ASCII and
    other text, and details on both sides of the cap."""
    triples = get_catalog().producer_actions()
    stamps = [now - timedelta(seconds=rng.randint(1, spread_s), milliseconds=rng.randint(0, 999))
              for _ in range(max(2, n // 4))]
    out = []
    for i in range(n):
        s, c, a = rng.choice(triples)
        out.append(make_event(
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            occurred_at=rng.choice(stamps).isoformat().replace("+00:00", "Z"),
            org_id=org, workspace_id=rng.choice(["ws1", "ws2", None]),
            scope=s, category=c, action=a, status=rng.choice(["SUCCESS", "FAILED"]),
            actor={"id": f"u-{i % 7}", "email": rng.choice([f"User{i % 5}@acme.example", None]),
                   "ip": rng.choice(["203.0.113.7", "2001:db8::1"])},
            target={"type": c, "id": rng.choice([f"vm-{i % 9}", None]), "name": rng.choice([*WORDS, None])},
            description=rng.choice(WORDS),
            detail=rng.choice([None, {"k": "é" * rng.randint(0, 40)}, {"x": 1}]),
        ))
    return out


def _filters(rng: random.Random, now: datetime) -> dict[str, Any]:
    pick = rng.randrange(12)
    raw: dict[str, Any] = {}
    if pick == 1:
        raw["category"] = "vm"
    elif pick == 2:
        raw["scope"], raw["category"] = "service", "vm"
    elif pick == 3:
        raw["action"] = ["vm.delete", "vm.create"]
    elif pick == 4:
        raw["status"] = "FAILED"
    elif pick == 5:
        raw["actor_email"] = "User1@acme.example"
    elif pick == 6:
        raw["ip"] = "2001:0db8::1"
    elif pick == 7:
        raw["workspace_id"] = "ws1"
    elif pick == 8:
        raw["target"] = rng.choice(["vm-3", "token"])
    elif pick >= 9:
        raw["q"] = rng.choice(["token", "TOK", "vm-7", "%", "_", "k sign", "déjà", "delete", "user3", "é"])
    if rng.random() < 0.3:
        raw["start"] = now - timedelta(hours=rng.randint(1, 80), microseconds=rng.randint(0, 999_999))
    if rng.random() < 0.3:
        raw["end"] = now - timedelta(hours=rng.randint(0, 40), microseconds=rng.randint(0, 999_999))
        if raw.get("start") and raw["start"] > raw["end"]:
            raw["start"], raw["end"] = raw["end"], raw["start"]
    return raw


def _both(window: PageWindow, store: Store, catalog: Catalog, who: Principal, raw: dict[str, Any], limit: int,
          after: tuple[datetime, uuid.UUID] | None, now: datetime) -> tuple[Any, Any]:
    filters = parse_filters(catalog, raw, now=now)
    sq = ScopedQuery(who).with_filters(filters, catalog)
    if after is not None:
        sq.after(*after)
    want = list_page(store, sq, catalog, limit, DETAIL_MAX)
    got = window.page(who, filters, catalog, limit, after, DETAIL_MAX, now)
    return want, got


def _window(store: Store, rows_per_org: int = 120, max_bytes: int = 64 << 20) -> PageWindow:
    w = window_for(store, rows_per_org=rows_per_org, max_bytes=max_bytes, detail_max=DETAIL_MAX, retention_days=400,
                   background=False)  # each first page fills at once (the background filler: its own test)
    assert w is not None
    return w


@pytest.fixture
def filled(store: Store) -> Iterator[tuple[Store, datetime]]:
    rng = random.Random(7)
    now = datetime.now(UTC)
    store_events(store, _events(rng, 300, now) + _events(rng, 40, now, org="globex"))
    yield store, now


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_every_answered_page_is_clickhouses_page(filled: tuple[Store, datetime], catalog: Catalog, seed: int) -> None:
    store, now = filled
    window = _window(store)
    rng = random.Random(seed)
    served = declined = 0
    for _ in range(120):
        raw = _filters(rng, now)
        who = rng.choice([OWNER, WS_ADMIN])
        limit = rng.choice([1, 5, 20, 50])
        after = None
        for _page in range(4):
            want, got = _both(window, store, catalog, who, raw, limit, after, now)
            if got is None:
                declined += 1
                break
            served += 1
            assert got == want, (raw, who.role, limit, after)
            after = want[1]
            if after is None:
                break
    # the window answers most pages (else this test would prove nothing) and declines some (non-ASCII keywords,
    # pages below the floor of its 120 rows per org)
    assert served > 150 and declined > 10, (served, declined)


def test_rows_stored_after_the_fill_are_in_the_next_page(filled: tuple[Store, datetime], catalog: Catalog) -> None:
    store, now = filled
    window = _window(store)
    first, got = _both(window, store, catalog, OWNER, {}, 20, None, now)
    assert got == first
    newest = make_event(occurred_at=(now - timedelta(seconds=0.5)).isoformat().replace("+00:00", "Z"))
    oldest_shown = datetime.fromisoformat(first[0][-1]["occurred_at"].replace("Z", "+00:00"))
    late = make_event(occurred_at=(oldest_shown - timedelta(milliseconds=1)).isoformat())
    store_events(store, [newest, late])  # at once, no wait: the page must show both
    want, got = _both(window, store, catalog, OWNER, {}, 22, None, now)
    assert got == want
    assert window.changes is not None  # the embedded engine: watched by its directories
    ids = [str(e["event_id"]) for e in got[0]]
    assert ids[0] == newest["event_id"] and late["event_id"] in ids
    assert window.stats["looks"] >= 2


def test_a_re_sent_copy_is_served_once(filled: tuple[Store, datetime], catalog: Catalog) -> None:
    store, now = filled
    window = _window(store)
    ev = make_event(occurred_at=(now - timedelta(seconds=1)).isoformat().replace("+00:00", "Z"))
    store_events(store, [ev])
    _both(window, store, catalog, OWNER, {}, 10, None, now)
    store_events(store, [ev, ev])
    store.client().command("OPTIMIZE TABLE audit_events FINAL")  # ClickHouse's page keeps the last copy, as merged
    want, got = _both(window, store, catalog, OWNER, {}, 10, None, now)
    assert got == want
    assert [str(e["event_id"]) for e in got[0]].count(ev["event_id"]) == 1


def test_another_tenants_and_workspaces_rows_are_never_served(filled: tuple[Store, datetime], catalog: Catalog
                                                              ) -> None:
    store, now = filled
    window = _window(store)
    globex = Principal(sub="g", email="g@globex.example", org_id="globex", role="org_owner")
    for who in (OWNER, globex, WS_ADMIN):
        after = None
        for page in range(20):
            want, got = _both(window, store, catalog, who, {}, 25, after, now)
            if got is None and page > 0:
                break  # below the floor of acme's 120 rows
            assert got is not None and got == want
            assert {e["org_id"] for e in got[0]} <= {who.org_id}
            if not who.is_owner:
                assert {e["workspace_id"] for e in got[0]} <= {"ws1"}
            after = want[1]
            if after is None:
                break
    # naming another org is refused before any read (scoping), so the window is never asked for it
    assert set(window._orgs) == {"acme", "globex"}


def test_pages_below_the_floor_are_left_to_clickhouse(filled: tuple[Store, datetime], catalog: Catalog) -> None:
    store, now = filled
    window = _window(store, rows_per_org=30)
    after = None
    pages = 0
    while True:
        want, got = _both(window, store, catalog, OWNER, {}, 10, after, now)
        if got is None:
            break
        assert got == want
        pages += 1
        after = want[1]
    assert 1 <= pages <= 3  # 30 rows held: at most three pages of ten, then the rest comes from ClickHouse
    old = {"start": now - timedelta(days=500)}
    assert _both(window, store, catalog, OWNER, old, 10, None, now)[1] is None  # before the retention


def test_memory_stays_within_its_budget(store: Store, catalog: Catalog) -> None:
    rng = random.Random(3)
    now = datetime.now(UTC)
    orgs = [f"org{i}" for i in range(6)]
    store_events(store, [e for o in orgs for e in _events(rng, 50, now, org=o)])
    budget = 240_000  # about 2.5 orgs of 40 rows (~1.9 KB each) with 10 served (~1.7 KB more each)
    window = _window(store, rows_per_org=40, max_bytes=budget)
    for o in orgs:
        who = Principal(sub="x", email=f"x@{o}.example", org_id=o, role="org_owner")
        want, got = _both(window, store, catalog, who, {}, 10, None, now)
        assert got == want
        assert 0 < window.held_bytes <= budget
    kept = list(window._orgs)
    assert len(kept) == 2 and kept == orgs[-2:]  # the least recently read went first


def test_a_flood_of_new_rows_starts_the_window_again(filled: tuple[Store, datetime], catalog: Catalog) -> None:
    store, now = filled
    window = _window(store, rows_per_org=40)
    _both(window, store, catalog, OWNER, {}, 10, None, now)
    store_events(store, _events(random.Random(5), 200, now, spread_s=60))  # more than four times the 40 held
    want, got = _both(window, store, catalog, OWNER, {}, 10, None, now)
    assert got == want and window.held_rows == 40 and window.stats["fills"] == 2


def test_a_table_that_is_not_a_plain_merge_tree_is_never_served(chdb_url: str, catalog: Catalog) -> None:
    """Block numbers are one sequence only in a plain MergeTree (a Distributed or Replicated table has one per shard
    and partition): anything else, every page goes to ClickHouse."""
    other = Store(chdb_url, f"w_{uuid.uuid4().hex[:12]}")
    try:
        other.admin_client().command(f"CREATE DATABASE {other.database}")
        other.client().command(f"CREATE TABLE {other.database}.audit_events (org_id String) ENGINE = Memory")
        window = _window(other)
        filters = parse_filters(catalog, {})
        assert window.page(OWNER, filters, catalog, 10, None, DETAIL_MAX, datetime.now(UTC)) is None
        assert window.changes is None and window.stats["declined"] == 1
    finally:
        other.admin_client().command(f"DROP DATABASE IF EXISTS {other.database} SYNC")
        other.close()


def test_a_merge_of_old_and_new_parts_keeps_the_window(filled: tuple[Store, datetime], catalog: Catalog) -> None:
    """A part merged from held and new blocks carries a new block number: its old rows come again and are kept
    once; the window is neither dropped nor wrong."""
    store, now = filled
    window = _window(store, rows_per_org=40)
    _both(window, store, catalog, OWNER, {}, 10, None, now)
    fresh = [make_event(occurred_at=(now - timedelta(seconds=s)).isoformat().replace("+00:00", "Z")) for s in (1, 2)]
    store_events(store, fresh)
    store.client().command("OPTIMIZE TABLE audit_events FINAL")
    want, got = _both(window, store, catalog, OWNER, {}, 10, None, now)
    assert got == want and window.stats["fills"] == 1
    assert {e["event_id"] for e in fresh} <= {str(e["event_id"]) for e in got[0]}
    assert window.held_rows == 42


def test_rows_stored_while_an_org_fills_are_not_lost(filled: tuple[Store, datetime], catalog: Catalog,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The fill runs without the lock; what is stored between its read and its joining the window is read then."""
    store, now = filled
    window = _window(store)
    late = make_event(occurred_at=(now - timedelta(seconds=1)).isoformat().replace("+00:00", "Z"))
    real = window._fill

    def fill_then_store(org_id: str) -> Any:
        org = real(org_id)
        store_events(store, [late])
        return org

    monkeypatch.setattr(window, "_fill", fill_then_store)
    _, got = _both(window, store, catalog, OWNER, {}, 10, None, now)
    want = list_page(store, ScopedQuery(OWNER).with_filters(parse_filters(catalog, {}, now=now), catalog), catalog, 10,
                     DETAIL_MAX)  # ClickHouse's page once the late event is stored
    assert got == want and got[0][0]["event_id"] == late["event_id"]


def test_a_slow_fill_does_not_hold_up_other_orgs_pages(filled: tuple[Store, datetime], catalog: Catalog,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store, now = filled
    window = _window(store)
    globex = Principal(sub="g", email="g@globex.example", org_id="globex", role="org_owner")
    _both(window, store, catalog, globex, {}, 10, None, now)  # globex held
    other_done = threading.Event()
    real = window._fill

    def fill_after_the_other_page(org_id: str) -> Any:
        assert other_done.wait(30), "globex's page waited for acme's fill"
        return real(org_id)

    monkeypatch.setattr(window, "_fill", fill_after_the_other_page)
    results: dict[str, Any] = {}
    acme = threading.Thread(target=lambda: results.update(acme=_both(window, store, catalog, OWNER, {}, 10, None,
                                                                     now)))
    acme.start()
    time.sleep(0.2)  # acme's request is in its fill
    results["globex"] = _both(window, store, catalog, globex, {}, 10, None, now)
    other_done.set()
    acme.join(60)
    want, got = results["acme"]
    assert got == want and results["globex"][1] == results["globex"][0]


def test_an_orgs_first_page_is_clickhouses_while_it_fills_in_the_background(filled: tuple[Store, datetime],
                                                                           catalog: Catalog) -> None:
    store, now = filled
    window = window_for(store, rows_per_org=120, max_bytes=64 << 20, detail_max=DETAIL_MAX, retention_days=400)
    assert window is not None
    try:
        assert _both(window, store, catalog, OWNER, {}, 10, None, now)[1] is None  # ClickHouse's, the fill started
        window.settle()
        late = make_event(occurred_at=(now - timedelta(seconds=1)).isoformat().replace("+00:00", "Z"))
        store_events(store, [late])
        want, got = _both(window, store, catalog, OWNER, {}, 10, None, now)
        assert got == want and got[0][0]["event_id"] == late["event_id"] and window.stats["fills"] == 1
    finally:
        window.close()


def test_background_fills_carry_the_apis_query_limits(store: Store) -> None:
    """The filler is a thread of its own: a frozen store must stop its fills at the API's time limit, as it stops
    every request's query, instead of holding the only filler thread for good."""
    window = window_for(store, rows_per_org=10, max_bytes=1 << 20, detail_max=DETAIL_MAX, retention_days=400,
                        limits={"max_execution_time": "7", "max_memory_usage": str(1 << 30)})
    assert window is not None and window._filler is not None
    try:
        got = window._filler.submit(lambda: store.client().query(
            "SELECT getSetting('max_execution_time'), getSetting('max_memory_usage')").result_rows[0]).result(30)
        assert (float(got[0]), int(got[1])) == (7.0, 1 << 30)
    finally:
        window.close()


def test_through_the_api_the_window_keeps_tenants_apart_and_refuses_forged_cursors(settings: Settings,
                                                                                    store: Store) -> None:
    """GET /v1/events as the attacker tries it once the window holds two orgs: every answer only the caller's
    org and workspaces, another org's cursor gives only the caller's rows, a forged cursor is a 400, a fresh event
    shows on the next page."""
    rng = random.Random(9)
    now = datetime.now(UTC)
    store_events(store, _events(rng, 120, now) + _events(rng, 60, now, org="globex"))
    acme, globex = auth(token(settings)), auth(token(settings, org="globex", email="g@globex.example"))
    ws1 = auth(token(settings, role="workspace_admin", workspaces=["ws1"]))
    with app_client(settings, store) as c:
        window = c.app.state.page_window  # type: ignore[attr-defined]
        for who in (acme, globex):
            assert c.get("/v1/events", headers=who).status_code == 200  # first page: ClickHouse's, fill started
        window.settle()
        served = window.stats["served"]
        a = c.get("/v1/events", params={"limit": 20}, headers=acme).json()
        g = c.get("/v1/events", params={"limit": 20}, headers=globex).json()
        w = c.get("/v1/events", params={"limit": 20}, headers=ws1).json()
        assert window.stats["served"] == served + 3  # from the window, not ClickHouse
        assert {e["org_id"] for e in a["data"]} == {"acme"} and {e["org_id"] for e in g["data"]} == {"globex"}
        assert {e["workspace_id"] for e in w["data"]} == {"ws1"}
        other = c.get("/v1/events", params={"limit": 20, "cursor": a["next_cursor"]}, headers=globex)
        assert other.status_code == 200 and {e["org_id"] for e in other.json()["data"]} <= {"globex"}
        forged = a["next_cursor"][:-4] + ("AAAA" if not a["next_cursor"].endswith("AAAA") else "BBBB")
        bad = c.get("/v1/events", params={"cursor": forged}, headers=acme)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"
        fresh = make_event(occurred_at=(datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z"))
        store_events(store, [fresh])
        assert c.get("/v1/events", headers=acme).json()["data"][0]["event_id"] == fresh["event_id"]
