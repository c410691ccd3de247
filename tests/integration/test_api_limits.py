"""Bounded work on a real uvicorn server: export slots, stalled clients, query limits, cancel on disconnect,
per-caller rate limit, the list's detail cap."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import Request

from auditlogkit.query_api.core.app import create_app
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import make_event, random_events
from tests.integration.live_server import live_server, stalled_get
from tests.integration.test_api_helpers import app_client, auth, store_events, token

BULK = """INSERT INTO audit_events (org_id, occurred_at, event_id, scope, category, action, status, actor_id,
actor_email, actor_type, description, received_at, kafka_topic, kafka_partition, kafka_offset)
SELECT 'acme', now64(3) - toIntervalMillisecond(number * 10), generateUUIDv4(number), 'service', 'vm', 'vm.create',
'SUCCESS', concat('u-', toString(number % 1000)), concat('user', toString(number % 1000), '@acme.example'), 'user',
concat('created vm ', hex(sipHash64(number)), ' ', repeat('x', {pad:UInt32})), now64(3), 'bulk', 0, number
FROM numbers({n:UInt64})"""


def bulk_insert(store: Store, n: int, pad: int = 0) -> None:
    """``n`` events of acme over the last n*10 ms, written by ClickHouse itself (fast, for volume)."""
    store.client().command(BULK, parameters={"n": n, "pad": pad})


def _wait(cond: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"{what} not within {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - t0


@pytest.fixture
def stalled_world(settings: Settings, store: Store) -> Iterator[tuple[str, Any, Settings]]:
    bulk_insert(store, 20_000, pad=300)  # ~8 MB of CSV: far more than a stalled connection's buffers
    s = settings.model_copy(update={"api_exports_total": 12, "api_exports_per_caller": 3, "api_rate_per_second": 0})
    app = create_app(s, store)
    with live_server(app, send_buffer=16384) as url:
        yield url, app, s


# A stalled export holds its slot until its client reads or the stall timeout (default far above this) ends it: a
# request blocked behind one waits that long. Answering within RESPONSIVE_S tells the two apart on a loaded machine;
# how fast the answers are is bench/api_stalled.py's.
RESPONSIVE_S = 5.0


def test_twelve_stalled_exports_leave_the_api_responsive(stalled_world: tuple[str, Any, Settings]) -> None:
    url, app, s = stalled_world
    assert s.api_export_stall_seconds > 4 * RESPONSIVE_S
    slots = app.state.export_slots
    callers = [auth(token(s, sub=f"u-{i}")) for i in range(5)]
    path = "/v1/events/export?format=csv&start=2000-01-01T00:00:00Z"
    socks = [stalled_get(url, path, callers[i // 3]) for i in range(12)]
    try:
        _wait(lambda: slots.running == 12, 20, "12 exports running")
        time.sleep(1.0)  # let them fill every buffer and block on their clients
        with httpx.Client(base_url=url, timeout=10) as c:
            for p, h in [("/healthz", {}), ("/v1/events", callers[4]), ("/v1/events?limit=1000", callers[4])]:
                t0 = time.monotonic()
                r = c.get(p, headers=h)
                took = time.monotonic() - t0
                assert r.status_code == 200 and took < RESPONSIVE_S, (p, r.status_code, took)
            t0 = time.monotonic()
            r = c.get(path, headers=callers[4])  # a 13th export: over the total
            assert r.status_code == 429 and time.monotonic() - t0 < RESPONSIVE_S
            assert r.json()["error"]["code"] == "too_many_exports" and int(r.headers["Retry-After"]) > 0
            r = c.get(path, headers=callers[0])  # a 4th of one caller: over its own limit
            assert r.status_code == 429 and "limit 3" in r.json()["error"]["message"]
            for sock in socks:
                sock.close()
            t0 = time.monotonic()
            while True:
                with c.stream("GET", path, headers=callers[4]) as r:
                    if r.status_code == 200:
                        assert next(r.iter_bytes()).startswith(b"event_id,")
                        break
                    assert r.status_code == 429
                assert time.monotonic() - t0 < RESPONSIVE_S, "no export slot came free soon after the clients left"
                time.sleep(0.05)
        _wait(lambda: slots.running == 0, 5, "every slot released")
    finally:
        for sock in socks:
            sock.close()


def test_an_export_whose_client_stops_reading_is_ended(settings: Settings, store: Store) -> None:
    bulk_insert(store, 20_000, pad=300)
    s = settings.model_copy(update={"api_export_stall_seconds": 1.0, "api_rate_per_second": 0})
    app = create_app(s, store)
    with live_server(app, send_buffer=16384) as url:
        sock = stalled_get(url, "/v1/events/export?format=csv&start=2000-01-01T00:00:00Z", auth(token(s)))
        try:
            _wait(lambda: app.state.export_slots.running == 1, 20, "the export running")
            took = _wait(lambda: app.state.export_slots.running == 0, 10, "the stalled export ended")
            assert took < 5
            # its export thread is free again (the query was stopped, not drained into a full queue)
            app.state.export_pool.submit(lambda: None).result(timeout=5)
            procs = store.client().query("SELECT count() FROM system.processes WHERE "
                                         "startsWith(Settings['log_comment'], 'export-')").result_rows[0][0]
            assert procs == 0
        finally:
            sock.close()


def test_a_query_over_its_time_limit_is_stopped_with_a_json_504(settings: Settings, store: Store) -> None:
    bulk_insert(store, 200_000)
    s = settings.model_copy(update={"api_query_timeout_seconds": 0.01, "api_rate_per_second": 0})
    with app_client(s, store) as c:
        # a keyword no row holds and too short for the ngram index: every row is read (one that every row matched
        # could be answered from the first granules in 10 ms)
        r = c.get("/v1/events", params={"q": "zq", "start": "2000-01-01T00:00:00Z", "limit": 1000},
                  headers=auth(token(s)))
        assert r.status_code == 504, r.text[:300]
        assert r.json()["error"]["code"] == "query_timeout" and "0.01 s" in r.json()["error"]["message"]


def test_a_client_that_disconnects_cancels_its_query(settings: Settings, store: Store) -> None:
    """A read runs with the configured limits and is killed when its client leaves."""
    s = settings.model_copy(update={"api_query_timeout_seconds": 120, "api_query_max_memory": 3 << 30})
    app = create_app(s, store)
    slow = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) % 7 = 1"

    @app.get("/v1/test-slow")
    async def slow_read(request: Request) -> dict[str, int]:  # a read that would run for minutes
        rows = await app.state.runner.run(request, lambda: store.client().query(slow).result_rows)
        return {"n": rows[0][0]}

    def processes() -> list[tuple[str, str]]:
        return [tuple(r) for r in store.client().query(
            "SELECT Settings['max_execution_time'], Settings['max_memory_usage'] FROM system.processes WHERE "
            "startsWith(Settings['log_comment'], 'api-')").result_rows]

    def running() -> int:
        return len(processes())

    with live_server(app) as url:
        sock = stalled_get(url, "/v1/test-slow", {})
        _wait(lambda: running() == 1, 10, "the slow query running")
        assert processes() == [("120", str(3 << 30))]
        sock.close()
        assert _wait(lambda: running() == 0, 5, "the query cancelled") < 2


def test_rate_limit_per_caller(settings: Settings, store: Store) -> None:
    s = settings.model_copy(update={"api_rate_per_second": 0.5, "api_rate_burst": 3})
    with app_client(s, store) as c:
        me, other = auth(token(s, sub="u-me")), auth(token(s, sub="u-other"))
        assert [c.get("/v1/events", headers=me).status_code for _ in range(3)] == [200, 200, 200]
        r = c.get("/v1/stats", headers=me)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 2
        assert c.get("/v1/events", headers=other).status_code == 200  # per caller
        assert c.get("/v1/events", headers=auth(token(s, sub="u-me", org="globex"))).status_code == 200  # per org
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200  # not /v1


def test_list_rows_leave_out_a_large_detail(settings: Settings, store: Store) -> None:
    big = make_event(detail={"blob": "y" * 5000})
    small = make_event(detail={"k": "v"})
    store_events(store, [big, small, *random_events(3, seed=1, orgs=("acme",))])
    s = settings.model_copy(update={"api_list_detail_max_bytes": 1000})
    with app_client(s, store) as c:
        h = auth(token(s))
        rows = {e["event_id"]: e for e in c.get("/v1/events", headers=h).json()["data"]}
        assert rows[big["event_id"]]["detail"] is None and rows[big["event_id"]]["detail_omitted"] is True
        assert rows[small["event_id"]]["detail"] == {"k": "v"} and rows[small["event_id"]]["detail_omitted"] is False
        one = c.get(f"/v1/events/{big['event_id']}", headers=h).json()
        assert one["detail"] == {"blob": "y" * 5000} and one["detail_omitted"] is False
