"""GET /v1/events/export: CSV/NDJSON content equals the list endpoint's view, formula injection neutralised,
headers, streaming on one thread that stops when the reader goes away; self-audit events of list/export."""

from __future__ import annotations

import asyncio
import csv
import gc
import io
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.producer import AuditProducer
from auditlogkit.query_api.core.app import create_app
from auditlogkit.query_api.read.export import CSV_COLUMNS, ExportStream
from auditlogkit.query_api.security.principal import Principal
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.event import parse_event
from auditlogkit.schemas.rows import EVENT_COLUMNS, EVENTS_TABLE, event_row
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import make_event, random_events
from tests.integration.test_api_helpers import app_client, auth, store_events, token


@pytest.fixture
def api(settings: Settings, store: Store) -> Iterator[TestClient]:
    with app_client(settings, store) as c:
        yield c


def _all_pages(api: TestClient, h: dict[str, str], params: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = api.get("/v1/events", params={**params, "limit": 1000, **({"cursor": cursor} if cursor else {})},
                    headers=h).json()
        out += r["data"]
        cursor = r["next_cursor"]
        if not cursor:
            return out


def test_csv_and_ndjson_equal_the_listed_view(api: TestClient, store: Store, settings: Settings) -> None:
    evs = random_events(2500, seed=3, orgs=("acme", "globex"), days=6)
    store_events(store, evs)
    h = auth(token(settings))
    params = {"scope": "service", "status": "SUCCESS"}
    listed = _all_pages(api, h, params)
    assert len(listed) > 200 and not any(e.pop("detail_omitted") for e in listed)
    r = api.get("/v1/events/export", params={**params, "format": "ndjson"}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in r.text.splitlines()] == listed  # same shape, same order, same detail
    r = api.get("/v1/events/export", params=params, headers=h)
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    cd = r.headers["content-disposition"]
    assert cd.startswith('attachment; filename="audit-log-') and cd.endswith('.csv"')
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [row["event_id"] for row in rows] == [e["event_id"] for e in listed]
    first, ev = rows[0], listed[0]
    assert (first["occurred_at"], first["actor_email"], first["action_label"], first["target_name"]) == (
        ev["occurred_at"], ev["actor"]["email"], ev["action_label"], ev["target"]["name"])
    assert json.loads(first["detail"]) == ev["detail"]


def test_csv_neutralises_formulas_and_keeps_text(api: TestClient, store: Store, settings: Settings) -> None:
    nasty = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "plain, \"quoted\"\nline"]
    evs = [make_event(description=d, target={"id": f"t{i}", "name": d}, actor={"user_agent": d})
           for i, d in enumerate(nasty)]
    store_events(store, evs)
    r = api.get("/v1/events/export", params={"format": "csv"}, headers=auth(token(settings)))
    rows = {row["target_id"]: row for row in csv.DictReader(io.StringIO(r.text))}
    for i, d in enumerate(nasty):
        row = rows[f"t{i}"]
        expected = d if i == len(nasty) - 1 else "'" + d
        assert row["description"] == row["target_name"] == row["actor_user_agent"] == expected
    assert all(not row[c].startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows.values() for c in CSV_COLUMNS)


def test_rows_outside_the_catalog_are_labelled_like_the_api(api: TestClient, store: Store, settings: Settings) -> None:
    """A row an older catalog allowed (unknown action; a category the action is not in): the exports apply the
    API's one label rule (the catalog's labels of (scope, action), else the codes)."""
    now = datetime.now(UTC)
    rows = []
    for i, (category, action) in enumerate([("vm", "vm.explode"), ("nocat", "vm.delete")]):
        row = dict(zip(EVENT_COLUMNS, event_row(parse_event(make_event()), now, "direct", 0, i), strict=True))
        rows.append(tuple({**row, "category": category, "action": action}.values()))
    store.client().insert(EVENTS_TABLE, rows, column_names=list(EVENT_COLUMNS))
    h = auth(token(settings))
    listed = {e["action"] + "|" + e["category"]: e for e in api.get("/v1/events", headers=h).json()["data"]}
    assert (listed["vm.explode|vm"]["scope_label"], listed["vm.delete|nocat"]["category_label"]) == ("service", "VM")
    keys = ("scope_label", "category_label", "action_label")
    r = api.get("/v1/events/export", params={"format": "ndjson"}, headers=h)
    for line in r.text.splitlines():
        doc = json.loads(line)
        assert [doc[k] for k in keys] == [listed[doc["action"] + "|" + doc["category"]][k] for k in keys]
    for row in csv.DictReader(io.StringIO(api.get("/v1/events/export", headers=h).text)):
        assert [row[k] for k in keys] == [listed[row["action"] + "|" + row["category"]][k] for k in keys]


def test_export_of_nothing_has_a_header_only(api: TestClient, settings: Settings) -> None:
    r = api.get("/v1/events/export", headers=auth(token(settings)))
    assert r.status_code == 200 and r.text == ",".join(CSV_COLUMNS) + "\n"
    assert api.get("/v1/events/export", params={"format": "ndjson"}, headers=auth(token(settings))).text == ""
    r = api.get("/v1/events/export", params={"format": "xml"}, headers=auth(token(settings)))
    assert r.status_code == 422 and r.json()["error"]["field"] == "format"


async def _body(stream: ExportStream) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_stream_runs_on_one_thread_and_stops_when_the_reader_leaves(store: Store) -> None:
    # several granules (8192 rows) and room to spare: a reader that leaves after one chunk can have been handed at
    # most two blocks (one taken, one queued); with 20,000 rows this failed once under load with every row handed
    # over, so blocks can be larger than a granule
    n = 50_000
    store_events(store, random_events(n, seed=8, orgs=("acme",), days=5))
    principal = Principal(sub="u", email="u@x.example", org_id="acme", role="org_owner",
                          permissions=frozenset({"audit:read", "audit:export"}))
    threads: set[str] = set()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-test")
    orig = store.client

    def spy() -> Any:
        threads.add(threading.current_thread().name)
        return orig()

    store.client = spy  # type: ignore[method-assign]
    try:
        sq = ScopedQuery(principal)
        stream = await ExportStream(store, sq, get_catalog(), "ndjson", pool, block_rows=100, queue_chunks=1).start()
        it = stream.__aiter__()
        assert await it.__anext__()
        await stream.aclose()  # the reader goes away after one chunk
        await asyncio.wrap_future(pool.submit(lambda: None))  # the worker is free: the query was abandoned
        assert stream.rows < n
        # complete run: every chunk produced on the one pool thread
        full = await ExportStream(store, ScopedQuery(principal), get_catalog(), "csv", pool, block_rows=128,
                                  page_rows=999).start()
        body = await _body(full)
        assert body.count(b"\n") == n + 1 and full.rows == n
        ids = [row["event_id"] for row in csv.DictReader(io.StringIO(body.decode()))]
        assert len(set(ids)) == n
        assert threads == {"export-test_0"}
    finally:
        store.client = orig  # type: ignore[method-assign]
        pool.shutdown()


async def test_a_stream_dropped_unread_frees_its_thread(store: Store) -> None:
    """The client left while the first block was awaited: the response (and its stream) is dropped unread."""
    store_events(store, random_events(2000, seed=9, orgs=("acme",), days=2))
    principal = Principal(sub="u", email="u@x.example", org_id="acme", role="org_owner",
                          permissions=frozenset({"audit:read", "audit:export"}))
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-test")
    stream = await ExportStream(store, ScopedQuery(principal), get_catalog(), "csv", pool, page_rows=100,
                                queue_chunks=1).start()  # 20 pages: the producer fills the queue and waits
    stop = stream._query.stop  # only to clean up if the test fails
    try:
        del stream
        gc.collect()
        await asyncio.wait_for(asyncio.wrap_future(pool.submit(lambda: None)), 10)  # the export thread is free
    finally:
        stop.set()
        pool.shutdown()


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
async def test_keyset_pages_neither_skip_nor_repeat_ties(store: Store, fmt: str) -> None:
    evs = random_events(40, seed=12, orgs=("acme",), days=2)
    for e in evs[:25]:
        e["occurred_at"] = evs[0]["occurred_at"]  # 25 events in the same millisecond
    store_events(store, evs)
    principal = Principal(sub="u", email="u@x.example", org_id="acme", role="org_owner",
                          permissions=frozenset({"audit:read", "audit:export"}))
    with ThreadPoolExecutor(max_workers=1) as pool:
        body = (await _body(await ExportStream(store, ScopedQuery(principal), get_catalog(), fmt, pool,
                                               page_rows=4).start())).decode()
    if fmt == "csv":
        ids = [row["event_id"] for row in csv.DictReader(io.StringIO(body))]
    else:
        ids = [json.loads(line)["event_id"] for line in body.splitlines()]
    assert sorted(ids) == sorted(e["event_id"] for e in evs)


async def test_list_and_export_publish_self_audit_events(settings: Settings, store: Store) -> None:
    """Through the real producer and consumer: the reads appear as organization/audit_log events."""
    store_events(store, [make_event()])
    worker = ConsumerWorker(settings, store)
    task = asyncio.create_task(worker.run())
    try:
        async with AuditProducer(settings.kafka_bootstrap, settings.topic) as producer:
            app = create_app(settings, store, producer=producer)
            h = auth(token(settings, sub="u-reader", email="reader@acme.example"))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                assert (await c.get("/v1/events", params={"q": "train"}, headers=h)).status_code == 200
                assert (await c.get("/v1/events/export", headers=h)).status_code == 200
                assert (await c.get("/v1/events", headers={})).status_code == 401  # not audited: no caller
                deadline = time.monotonic() + 30
                while True:
                    r = (await c.get("/v1/events", params={"category": "audit_log"}, headers=h)).json()
                    got = {e["action"]: e for e in r["data"]}
                    if {"audit_log.list", "audit_log.export"} <= set(got):
                        break
                    assert time.monotonic() < deadline, got
                    await asyncio.sleep(0.3)
                # repeats of one view within a minute are recorded once; another view or an export always is
                for _ in range(3):
                    assert (await c.get("/v1/events", params={"q": "train"}, headers=h)).status_code == 200
                assert (await c.get("/v1/events", params={"q": "vm"}, headers=h)).status_code == 200
                assert (await c.get("/v1/events/export", headers=h)).status_code == 200
                deadline = time.monotonic() + 30
                while True:
                    page = (await c.get("/v1/events", params={"category": "audit_log", "limit": 1000}, headers=h)).json()
                    reads = page["data"]
                    exports = [e for e in reads if e["action"] == "audit_log.export"
                               and e["detail"]["phase"] == "started"]
                    views = [e["detail"]["filters"].get("q") for e in reads if e["action"] == "audit_log.list"]
                    if len(exports) == 2 and "vm" in views:
                        break
                    assert time.monotonic() < deadline, reads
                    await asyncio.sleep(0.3)
        assert views.count("train") == 1, views
        assert views.count(None) == 1, views  # the polling above: one live view, recorded once
        lst = got["audit_log.list"]
        assert lst["actor"]["id"] == "u-reader" and lst["actor"]["email"] == "reader@acme.example"
        assert lst["org_id"] == "acme" and lst["detail"]["filters"]["q"] == "train"
        assert got["audit_log.export"]["detail"]["format"] == "csv"
        finished = [e for e in reads if e["action"] == "audit_log.export" and e["detail"]["phase"] != "started"]
        assert finished and all(e["detail"]["phase"] == "complete" and e["detail"]["rows"] >= 1 for e in finished)
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
