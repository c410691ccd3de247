"""The live tail, on the real broker, the real consumer and real chDB, served by uvicorn (SSE needs a socket)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.producer import AuditProducer
from auditlogkit.query_api.core.app import create_app
from auditlogkit.query_api.read import tail_position
from auditlogkit.schemas.event import parse_event
from auditlogkit.schemas.rows import EVENT_COLUMNS, EVENTS_TABLE, event_row
from auditlogkit.server.broker import ensure_topics
from auditlogkit.server.settings import Settings
from auditlogkit.server.signing import ServerKeys
from auditlogkit.server.store import Store
from tests.consumer_helpers import BackgroundWorker
from tests.factories import make_event
from tests.integration.live_server import live_server
from tests.integration.sse_client import SseClient
from tests.integration.test_api_helpers import auth, token


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _mix(n: int, seed: int) -> list[dict[str, Any]]:
    """Events of two orgs and three kinds of workspace, with both statuses."""
    kinds = [("acme", "ws-a"), ("acme", "ws-b"), ("acme", None), ("globex", "ws-a")]
    return [make_event(org_id=kinds[(i + seed) % 4][0], workspace_id=kinds[(i + seed) % 4][1], occurred_at=_now(),
                       status="FAILED" if i % 3 == 0 else "SUCCESS", description=f"tail event {seed}-{i}")
            for i in range(n)]


def _api_ids(url: str, tok: str, params: dict[str, Any]) -> list[str]:
    out: list[str] = []
    cursor = None
    with httpx.Client(base_url=url, headers=auth(tok), timeout=30) as c:
        while True:
            r = c.get("/v1/events", params={**params, "limit": 1000, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            body = r.json()
            out += [e["event_id"] for e in body["data"]]
            cursor = body["next_cursor"]
            if not cursor:
                return out


async def _wait_until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def test_two_scopes_receive_exactly_what_they_may_list_in_order_and_resume_without_gap_or_repeat(
        settings: Settings, store: Store) -> None:
    s = settings.model_copy(update={"api_rate_per_second": 0, "api_tail_poll_seconds": 0.3})
    owner_tok = token(s, sub="u-owner", email="owner@acme.example")
    admin_tok = token(s, role="workspace_admin", workspaces=["ws-a"], sub="u-admin", email="admin@acme.example")
    first, second = _mix(120, 0), _mix(80, 1)
    for_owner = [e["event_id"] for e in first + second if e["org_id"] == "acme"]
    for_admin = [e["event_id"] for e in first + second if e["org_id"] == "acme" and e["workspace_id"] == "ws-a"]
    failed_admin = [e["event_id"] for e in first + second
                    if e["org_id"] == "acme" and e["workspace_id"] == "ws-a" and e["status"] == "FAILED"]
    n_first_admin = sum(1 for e in first if e["org_id"] == "acme" and e["workspace_id"] == "ws-a")

    with live_server(create_app(s, store)) as url:
        owner = SseClient(url, owner_tok).start().wait_live()
        admin = SseClient(url, admin_tok).start().wait_live()
        admin_failed = SseClient(url, admin_tok, params={"status": "FAILED"}).start().wait_live()
        try:
            async with BackgroundWorker(ConsumerWorker(s, store)), AuditProducer(s.kafka_bootstrap, s.topic) as p:
                await p.send_many(first)
                await asyncio.to_thread(admin.wait_for, n_first_admin)
                admin.stop()  # the admin leaves; more events arrive while it is away
                await p.send_many(second)
                await asyncio.to_thread(owner.wait_for, len(for_owner))
                await asyncio.to_thread(admin_failed.wait_for, len(failed_admin))
                # resume after the last event received, and from the middle of what was received
                resumed = SseClient(url, admin_tok, last_event_id=admin.events[-1].id).start().wait_live()
                middle = SseClient(url, admin_tok, last_event_id=admin.events[9].id).start().wait_live()
                await asyncio.to_thread(resumed.wait_for, len(for_admin) - n_first_admin)
                await asyncio.to_thread(middle.wait_for, len(for_admin) - 10)
                await asyncio.sleep(1.0)  # nothing more may come
            # each scope: exactly its events, once each, in the order they were published (one org: one partition)
            assert owner.ids == for_owner
            assert admin.ids == for_admin[:n_first_admin]
            assert admin_failed.ids == failed_admin
            assert resumed.ids == for_admin[n_first_admin:]
            assert middle.ids == for_admin[10:]
            assert all(e.event == "audit" and e.id for e in owner.events + resumed.events)
            # ... which is what each may list
            assert sorted(_api_ids(url, owner_tok, {})) == sorted(for_owner)
            assert sorted(_api_ids(url, admin_tok, {})) == sorted(for_admin)
            # the event is the list's event
            listed = httpx.get(url + "/v1/events", params={"limit": 1000}, headers=auth(owner_tok)).json()["data"]
            by_id = {e["event_id"]: e for e in listed}
            for e in owner.events:
                assert e.data == by_id[e.data["event_id"]]
        finally:
            for c in (owner, admin, admin_failed, *(c for c in (locals().get("resumed"), locals().get("middle")) if c)):
                c.stop()


class CountingStore(Store):
    """The real store; counts the queries its clients run (what the acceptance measures)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queries = 0
        self._count_lock = threading.Lock()

    def client(self) -> Any:
        c = super().client()
        if not getattr(c, "_counted", False):
            query, command = c.query, c.command

            def counted_query(*a: Any, **k: Any) -> Any:
                with self._count_lock:
                    self.queries += 1
                return query(*a, **k)

            def counted_command(*a: Any, **k: Any) -> Any:
                with self._count_lock:
                    self.queries += 1
                return command(*a, **k)

            c.query, c.command = counted_query, counted_command  # type: ignore[method-assign]
            c._counted = True  # type: ignore[attr-defined]
        return c


_offsets = itertools.count()


def _store_in_topic(store: Store, topic: str, events: list[dict[str, Any]], partition: int = 0) -> None:
    """Insert events as the consumer would (one insert, offsets in order)."""
    rows = [event_row(parse_event(e), datetime.now(UTC), topic, partition, next(_offsets)) for e in events]
    store.client().insert(EVENTS_TABLE, rows, column_names=list(EVENT_COLUMNS))


async def topic_events(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every event on ``topic`` (read from the start by a fresh group)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"t-{uuid.uuid4().hex[:8]}", enable_auto_commit=False)
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
    finally:
        await consumer.stop()
    return [json.loads(m.value) for msgs in batches.values() for m in msgs]


def test_a_hundred_streams_cost_one_store_query_per_poll(settings: Settings, store: Store) -> None:
    s = settings.model_copy(update={"api_rate_per_second": 0, "api_tail_poll_seconds": 1.0})
    counting = CountingStore(store.url, store.database)
    clients = [SseClient("", token(s, sub=f"u-{i}", email=f"u{i}@acme.example",
                                   **({"role": "workspace_admin", "workspaces": ["ws-a"]} if i % 2 else {})),
                         params={"status": "FAILED"} if i % 4 == 3 else {}) for i in range(100)]
    with live_server(create_app(s, counting)) as url:
        try:
            for c in clients:
                c.base_url = url
                c.start()
            for c in clients:
                c.wait_live(60)
            window_s = 6.0
            before, t0 = counting.queries, time.monotonic()
            batches = [_mix(40, k) for k in range(3)]
            for b in batches:
                _store_in_topic(store, s.topic, b)
                time.sleep(window_s / len(batches))
            queries, took = counting.queries - before, time.monotonic() - t0
            everything = [e for b in batches for e in b]
            for i, c in enumerate(clients):
                want = [e["event_id"] for e in everything if e["org_id"] == "acme" and (
                    i % 2 == 0 or e["workspace_id"] == "ws-a") and (i % 4 != 3 or e["status"] == "FAILED")]
                c.wait_for(len(want), 20)
                assert c.ids == want, i
        finally:
            for c in clients:
                c.stop()
    assert queries <= took / s.api_tail_poll_seconds + 1, (queries, took)
    print(f"100 streams: {queries} store queries in {took:.1f} s")


def test_tail_errors_limits_and_its_self_audit_event(settings: Settings, store: Store) -> None:
    topic = f"audit.selfaudit.{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(settings.kafka_bootstrap, [topic], 1))
    s = settings.model_copy(update={"api_rate_per_second": 0, "api_tail_per_caller": 2})
    tok = token(s, sub="u-tail", email="tail@acme.example")

    app = create_app(s, store)
    with live_server(app) as url:
        async def start_producer() -> AuditProducer:
            producer = AuditProducer(s.kafka_bootstrap, topic)
            await producer.start()
            return producer

        loop = app.state.server_loop  # the producer must live on the loop that serves the app
        producer = asyncio.run_coroutine_threadsafe(start_producer(), loop).result(30)
        app.state.auditor.attach(producer)
        try:
            def get(headers: dict[str, str], **params: Any) -> httpx.Response:
                return httpx.get(url + "/v1/events/stream", headers=headers, params=params, timeout=10)

            r = get({})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            r = get({**auth(tok), "Last-Event-ID": "bm90IGEgcG9zaXRpb24"})
            assert r.status_code == 400 and r.json()["error"]["field"] == "Last-Event-ID"
            r = get({**auth(tok), "Last-Event-ID": tail_position.encode({0: 5}, "some.other.topic",
                                                                         app.state.server_keys)})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_position"
            r = get(auth(tok), scope="bill")
            assert r.status_code == 422 and r.json()["error"]["field"] == "scope"
            r = get(auth(token(s, permissions=("audit:export",))))
            assert r.status_code == 403
            a = SseClient(url, tok, params={"status": "FAILED"}).start().wait_live()
            b = SseClient(url, tok).start().wait_live()
            r = get(auth(tok))
            assert r.status_code == 429 and r.headers["Retry-After"]
            assert r.json()["error"]["code"] == "too_many_live_tails"
            a.stop()
            b.stop()
            deadline = time.monotonic() + 10
            while app.state.tail_slots.running:  # a disconnected stream frees its place
                assert time.monotonic() < deadline, "streams not released"
                time.sleep(0.05)
            SseClient(url, tok).start().wait_live().stop()
        finally:
            asyncio.run_coroutine_threadsafe(producer.stop(), loop).result(30)

    recorded = [e for e in asyncio.run(topic_events(s.kafka_bootstrap, topic)) if e["action"] == "audit_log.tail"]
    started = [e for e in recorded if e["detail"]["phase"] == "started"]
    assert len(started) == 3  # one per stream that opened; refused calls record nothing
    assert {e["actor"]["id"] for e in recorded} == {"u-tail"}
    assert sorted(json.dumps(e["detail"]["filters"], sort_keys=True) for e in started) == sorted(
        json.dumps(f, sort_keys=True) for f in ({"status": "FAILED"}, {}, {}))


def _rows_between(store: Store, topic: str, sql: str, params: dict[str, Any]) -> set[tuple[int, int]]:
    q = f"SELECT kafka_partition, kafka_offset FROM {EVENTS_TABLE} WHERE kafka_topic = {{t:String}} AND {sql}"
    return {(int(p), int(o)) for p, o in store.client().query(q, parameters={**params, "t": topic}).result_rows}


def test_position_conditions_select_exactly_the_rows_after_and_between(store: Store) -> None:
    topic = "positions"
    rows = []
    for p, n in ((0, 6), (1, 4), (3, 5)):  # partition 2 has no rows yet
        for o in range(n):
            rows.append(event_row(parse_event(make_event()), datetime.now(UTC), topic, p, o))
    store.client().insert(EVENTS_TABLE, rows, column_names=list(EVENT_COLUMNS))
    p_at, o_at = EVENT_COLUMNS.index("kafka_partition"), EVENT_COLUMNS.index("kafka_offset")
    every = {(r[p_at], r[o_at]) for r in rows}
    for pos in ({}, {0: 2}, {0: 5, 1: 1}, {1: 3, 3: 0}, {0: 10, 1: 10, 2: 10, 3: 10}):
        sql, params = tail_position.after_sql(pos)
        assert _rows_between(store, topic, sql, params) == {(p, o) for p, o in every if o > pos.get(p, -1)}, pos
    for low, high in (({}, {0: 3, 1: 3}), ({0: 1}, {0: 4, 3: 2}), ({0: 4}, {0: 4}), ({3: 9}, {3: 2})):
        sql, params = tail_position.between_sql(low, high)
        assert _rows_between(store, topic, sql, params) == {
            (p, o) for p, o in every if p in high and low.get(p, -1) < o <= high[p]}, (low, high)



def test_a_stream_that_falls_behind_is_ended_with_a_position_to_resume_from_without_loss(
        settings: Settings, store: Store) -> None:
    s = settings.model_copy(update={"api_rate_per_second": 0, "api_tail_poll_seconds": 0.3,
                                    "api_tail_backlog_events": 100})
    tok = token(s)
    burst = [make_event(occurred_at=_now(), description=f"burst {i}") for i in range(150)]
    with live_server(create_app(s, store)) as url:
        first = SseClient(url, tok).start().wait_live()
        try:
            _store_in_topic(store, s.topic, burst)  # more than the backlog in one poll, before any event was sent
            assert first.ended.wait(20), "the stream was not ended"
            assert first.events == [] and first.last_event_id  # nothing sent, but where to resume
            again = SseClient(url, tok, last_event_id=first.last_event_id).start().wait_live()
            again.wait_for(len(burst))
            time.sleep(0.7)
            assert again.ids == [e["event_id"] for e in burst]
            again.stop()
        finally:
            first.stop()


def test_a_stream_ends_when_its_token_expires_and_resumes_only_with_a_valid_one(settings: Settings,
                                                                                store: Store) -> None:
    import jwt

    s = settings.model_copy(update={"api_rate_per_second": 0, "api_tail_poll_seconds": 0.2,
                                    "jwt_leeway_seconds": 0})
    before = [make_event(occurred_at=_now(), description=f"before expiry {i}") for i in range(5)]
    after = [make_event(occurred_at=_now(), description=f"after expiry {i}") for i in range(5)]
    with live_server(create_app(s, store)) as url:
        short = token(s, ttl=4)
        exp = jwt.decode(short, options={"verify_signature": False})["exp"]
        first = SseClient(url, short).start().wait_live()
        again = None
        try:
            _store_in_topic(store, s.topic, before)
            first.wait_for(len(before), 10)
            assert first.ended.wait(15), "the stream outlived its token"
            ended = time.time()
            assert exp <= ended < exp + 3, (exp, ended)
            assert first.ids == [e["event_id"] for e in before] and first.last_event_id
            _store_in_topic(store, s.topic, after)
            r = httpx.get(url + "/v1/events/stream", timeout=10,
                          headers={**auth(short), "Last-Event-ID": first.last_event_id})
            assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
            again = SseClient(url, token(s), last_event_id=first.last_event_id).start().wait_live()
            again.wait_for(len(after), 10)
            time.sleep(0.5)
            assert again.ids == [e["event_id"] for e in after]  # no gap, no repeat across the expiry
        finally:
            first.stop()
            if again is not None:
                again.stop()


# ----- positions the server did not issue; what a stream records; one org's event is not another's ---------------
def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _open_status(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Status and body of a stream request that is refused; a stream that opens is closed at once (body b"")."""
    with httpx.stream("GET", url + "/v1/events/stream", headers=headers, timeout=10) as r:
        return (r.status_code, b"") if r.status_code == 200 else (r.status_code, r.read())


def test_a_last_event_id_the_server_did_not_issue_is_400_and_reads_nothing(settings: Settings, store: Store) -> None:
    s = settings.model_copy(update={"api_rate_per_second": 0, "api_tail_poll_seconds": 0.2})
    tok = token(s)
    _store_in_topic(store, s.topic, [make_event(occurred_at=_now(), description=f"kept {i}") for i in range(3)])
    app = create_app(s, store)
    with live_server(app) as url:
        first = SseClient(url, tok).start().wait_live()
        later = [make_event(occurred_at=_now(), description=f"later {i}") for i in range(2)]
        try:
            _store_in_topic(store, s.topic, later)
            first.wait_for(2, 10)
        finally:
            first.stop()
        real = first.events[0].id
        assert real

        def forged() -> Iterator[tuple[str, str]]:
            yield "the old unsigned form of an empty position", "MXwzYTQ2YTAwZXw"
            yield "the old unsigned form for this topic", _b64(f"1|{zlib.crc32(s.topic.encode()):08x}|".encode())
            signed = base64.urlsafe_b64decode(real + "=" * (-len(real) % 4))
            body, mac = signed[:-16], signed[-16:]
            assert re.fullmatch(rb"2\|0:\d+", body), body
            yield "a real one, offset edited", _b64(re.sub(rb":\d+", b":0", body) + mac)
            yield "a real one, partitions dropped", _b64(b"2|" + mac)
            yield "signed with another server secret", tail_position.encode(
                {}, s.topic, ServerKeys("another-server-secret-0123456789abcdef"))
            yield "of another topic", tail_position.encode({}, "some.other.topic", app.state.server_keys)

        for what, text in forged():
            status, answer = _open_status(url, {**auth(tok), "Last-Event-ID": text})
            assert status == 400, (what, status)
            err = json.loads(answer)["error"]
            assert err["code"] == "invalid_position" and err["field"] == "Last-Event-ID", (what, err)
            assert b"event: audit" not in answer
        resumed = SseClient(url, tok, last_event_id=real).start().wait_live()  # the real one resumes
        try:
            resumed.wait_for(1, 10)
            time.sleep(0.5)
            assert resumed.ids == [later[1]["event_id"]]
        finally:
            resumed.stop()


class _SwitchableProducer:
    """Stands in for the self-audit's producer: acknowledges (and keeps) every event until ``failing``."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.failing = False

    def _ack(self) -> asyncio.Future[None]:
        if self.failing:
            raise ConnectionError("the broker is gone")
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack

    async def send(self, event: dict[str, Any], **_: Any) -> asyncio.Future[None]:
        ack = self._ack()
        self.events.append(event)
        return ack

    async def send_raw(self, value: bytes, key: Any, headers: Any = None) -> asyncio.Future[None]:
        ack = self._ack()
        self.events.append(json.loads(value))
        return ack

    def connected(self) -> bool:
        return not self.failing

    async def reachable(self) -> None:
        if self.failing:
            raise ConnectionError("the broker is gone")


def _spy_records(app: Any) -> list[dict[str, Any]]:
    """The ``detail`` extras of every ``audit_log.tail`` event the app's auditor published, as they are acked."""
    seen: list[dict[str, Any]] = []
    auditor = app.state.auditor
    record = auditor.record

    async def spy(*args: Any, **kwargs: Any) -> None:
        await record(*args, **kwargs)
        if args[2] == "audit_log.tail":
            seen.append(kwargs.get("extra") or {})

    auditor.record = spy
    return seen


def _until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _at(minutes_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def test_a_stream_records_the_rows_it_delivered_and_the_period_it_caught_up_over(settings: Settings,
                                                                                store: Store) -> None:
    topic = f"audit.selfaudit.{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(settings.kafka_bootstrap, [topic], 1))
    s = settings.model_copy(update={"api_rate_per_second": 0, "api_tail_poll_seconds": 0.2,
                                    "api_tail_audit_seconds": 1.0})
    tok = token(s, sub="u-watch", email="watch@acme.example")
    app = create_app(s, store)
    seen = _spy_records(app)

    def phases(resumed: bool) -> list[dict[str, Any]]:
        return [d for d in seen if d.get("resumed") is resumed]

    with live_server(app) as url:
        async def start_producer() -> AuditProducer:
            producer = AuditProducer(s.kafka_bootstrap, topic)
            await producer.start()
            return producer

        loop = app.state.server_loop
        producer = asyncio.run_coroutine_threadsafe(start_producer(), loop).result(30)
        app.state.auditor.attach(producer)
        first = SseClient(url, tok).start().wait_live()
        resumed = None
        try:
            live = [make_event(occurred_at=_now(), description=f"live {i}") for i in range(5)]
            _store_in_topic(store, s.topic, live)
            first.wait_for(5, 10)
            _until(lambda: any(d["phase"] == "progress" for d in phases(False)), 10, "no progress event")
            first.stop()
            _until(lambda: any(d["phase"] == "end" for d in phases(False)), 10, "no end event")
            # while it is away: three events, stored out of occurred_at order
            away = [make_event(occurred_at=_at(m), description=f"away {m}") for m in (30, 90, 10)]
            _store_in_topic(store, s.topic, away)
            last_away = store.client().query(
                "SELECT max(kafka_offset) FROM audit_events WHERE kafka_topic = {t:String} AND kafka_partition = 0",
                parameters={"t": s.topic}).result_rows[0][0]
            # the resumed stream catches up to the hub's position: it must have passed them (or, with no stream
            # open, the hub must have stopped: it then starts again from the stored position), else they come live
            hub = app.state.tail_hub
            _until(lambda: hub.position.get(0, -1) >= last_away or hub._task is None or hub._task.done(), 10,
                   "the hub neither passed them nor stopped")
            resumed = SseClient(url, tok, last_event_id=first.last_event_id).start().wait_live()
            resumed.wait_for(3, 10)
            _until(lambda: any(d["phase"] == "progress" for d in phases(True)), 10, "no catch-up progress")
            more = [make_event(occurred_at=_now(), description=f"more {i}") for i in range(2)]
            _store_in_topic(store, s.topic, more)
            resumed.wait_for(5, 10)
            _until(lambda: sum(d.get("rows", 0) for d in phases(True) if d["phase"] == "progress") == 5, 10,
                   "the live rows of the resumed stream are not on record")
            resumed.stop()
            _until(lambda: any(d["phase"] == "end" for d in phases(True)), 10, "no end event")
        finally:
            first.stop()
            if resumed is not None:
                resumed.stop()
            asyncio.run_coroutine_threadsafe(producer.stop(), loop).result(30)
    assert resumed.ids == [e["event_id"] for e in away + more]

    stored = [e for e in asyncio.run(topic_events(s.kafka_bootstrap, topic)) if e["action"] == "audit_log.tail"]
    assert {e["actor"]["id"] for e in stored} == {"u-watch"}
    for resumed_flag, delivered in ((False, 5), (True, 5)):
        got = [{k: v for k, v in e["detail"].items() if k not in ("role", "filters")}
               for e in stored if e["detail"]["resumed"] is resumed_flag]
        assert got[0]["phase"] == "started" and got[-1]["phase"] == "end", got
        assert {d["phase"] for d in got[1:-1]} == {"progress"}, got
        assert all(d["rows"] > 0 for d in got[1:-1]), got  # a period without rows records nothing
        assert sum(d.get("rows", 0) for d in got) == got[-1]["rows_total"] == delivered, got
        assert got[-1]["outcome"] == "disconnected" and got[-1]["rows"] == 0, got
        if resumed_flag:
            period = {k: got[-1][k] for k in ("caught_up_rows", "caught_up_from", "caught_up_to")}
            assert period == {"caught_up_rows": 3, "caught_up_from": away[1]["occurred_at"],
                              "caught_up_to": away[2]["occurred_at"]}, got
            assert {k: got[1][k] for k in period} == period  # the catch-up's own progress event says it
        else:
            assert not any("caught_up_rows" in d for d in got), got


def test_a_stream_whose_progress_cannot_be_recorded_ends_before_sending_more(settings: Settings,
                                                                            store: Store) -> None:
    s = settings.model_copy(update={"api_rate_per_second": 0, "api_tail_poll_seconds": 0.2,
                                    "api_tail_audit_seconds": 1.0, "api_audit_ack_timeout_seconds": 0.5})
    tok = token(s)
    recorder = _SwitchableProducer()
    app = create_app(s, store, producer=recorder)  # type: ignore[arg-type]
    seen = _spy_records(app)
    with live_server(app) as url:
        stream = SseClient(url, tok).start().wait_live()
        again = None
        try:
            first = [make_event(occurred_at=_now(), description=f"recorded {i}") for i in range(3)]
            _store_in_topic(store, s.topic, first)
            stream.wait_for(3, 10)
            _until(lambda: any(d["phase"] == "progress" for d in seen), 10, "no progress event")
            recorder.failing = True
            time.sleep(1.3)  # the next record is due: the next events must wait for it
            unrecorded = [make_event(occurred_at=_now(), description=f"not recorded {i}") for i in range(2)]
            _store_in_topic(store, s.topic, unrecorded)
            assert stream.ended.wait(10), "the stream kept going while its reads could not be recorded"
            assert stream.ids == [e["event_id"] for e in first] and stream.error is None
            _until(lambda: app.state.tail_slots.running == 0, 5, "the ended stream's place was not freed")
            status, answer = _open_status(url, {**auth(tok), "Last-Event-ID": stream.last_event_id or ""})
            assert status == 503 and json.loads(answer)["error"]["code"] == "audit_unavailable"
            recorder.failing = False  # once reads can be recorded again, it resumes without loss
            again = SseClient(url, tok, last_event_id=stream.last_event_id).start().wait_live()
            again.wait_for(2, 10)
            time.sleep(0.5)
            assert again.ids == [e["event_id"] for e in unrecorded]
        finally:
            stream.stop()
            if again is not None:
                again.stop()
    first_stream = [d for d in seen if d["resumed"] is False and d["phase"] != "started"]
    assert sum(d["rows"] for d in first_stream) == 3  # on record: exactly what it delivered


def test_two_orgs_events_with_the_same_event_id_each_reach_their_own_tail(settings: Settings, store: Store) -> None:
    s = settings.model_copy(update={"api_rate_per_second": 0, "api_tail_poll_seconds": 0.2})
    shared_id = str(uuid.uuid4())
    acme = [make_event(event_id=shared_id, org_id="acme", occurred_at=_now(), description="acme's"),
            make_event(org_id="acme", occurred_at=_now(), description="acme's next")]
    globex = [make_event(event_id=shared_id, org_id="globex", occurred_at=_now(), description="globex's"),
              make_event(org_id="globex", occurred_at=_now(), description="globex's next")]
    with live_server(create_app(s, store)) as url:
        a = SseClient(url, token(s, org="acme")).start().wait_live()
        g = SseClient(url, token(s, org="globex", email="tester@globex.example")).start().wait_live()
        try:
            _store_in_topic(store, s.topic, [acme[0], globex[0], acme[1], globex[1]])
            a.wait_for(2, 10)
            g.wait_for(2, 10)
            time.sleep(0.5)
            assert a.ids == [e["event_id"] for e in acme]
            assert g.ids == [e["event_id"] for e in globex]
            assert [e.data["description"] for e in a.events + g.events] == [
                "acme's", "acme's next", "globex's", "globex's next"]
        finally:
            a.stop()
            g.stop()
