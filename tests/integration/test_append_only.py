"""The record is append-only and attributable (EVENT.md): first write wins, publishers recorded from the
credential, "who read the audit log" unforgeable. Black-box over HTTP (httpx against the real app) and a foreign
Kafka client, on the real broker, consumer and store."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from auditlogkit.consumers.batch import FlushJob, PartitionBatch
from auditlogkit.consumers.decode.decoder import Chunk
from auditlogkit.consumers.store.first_write import FINGERPRINT_SQL, KnownIds, fingerprint, suspects
from auditlogkit.consumers.store.first_write_guard import FirstWriteGuard
from auditlogkit.consumers.store.inserter import Inserter
from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.producer import AuditProducer, InvalidEvent
from auditlogkit.query_api.core.app import create_app
from auditlogkit.query_api.security.auth import mint_token
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.event import parse_event
from auditlogkit.schemas.rows import event_row
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.provenance import API, KAFKA, publisher_of, signed_headers
from auditlogkit.server.settings import Settings
from auditlogkit.server.signing import ServerKeys
from auditlogkit.server.store import Store
from tests.consumer_helpers import BackgroundWorker
from tests.factories import make_event
from tests.integration.test_api_helpers import insert_rows
from tests.integration.test_api_ingest import NDJSON, client, line, service_token

OWNER = {"sub": "u-owner", "email": "owner@acme.example", "org_id": "acme", "role": "org_owner"}


def owner_headers(s: Settings) -> dict[str, str]:
    assert s.jwt_secret
    return {"Authorization": "Bearer " + mint_token(s.jwt_secret, **OWNER, ttl_seconds=3600)}


def stored_rows(store: Store, event_id: str) -> list[dict[str, Any]]:
    res = store.client().query(
        "SELECT description, status, occurred_at, publisher_via, publisher_id FROM audit_events FINAL "
        "WHERE event_id = toUUID({e:String})", parameters={"e": event_id})
    return [dict(zip(res.column_names, r, strict=True)) for r in res.result_rows]


async def raw_send(bootstrap: str, topic: str, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
    """A foreign producer: plain aiokafka, no SDK, no validation."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await p.start()
    try:
        await p.send_and_wait(topic, value=value, key=b"acme", headers=headers)
    finally:
        await p.stop()


async def dlq_reasons(bootstrap: str, dlq: str, want: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    c = AIOKafkaConsumer(dlq, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await c.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(out) < want and asyncio.get_running_loop().time() < deadline:
            for recs in (await c.getmany(timeout_ms=500)).values():
                for r in recs:
                    out.append({k: v.decode("utf-8", "replace") for k, v in (r.headers or ())} | {"value": r.value})
    finally:
        await c.stop()
    return out


async def test_three_rewrite_forms_leave_every_read_showing_the_original(settings: Settings, store: Store,
                                                                          broker: Any) -> None:
    s = settings
    eid = str(uuid.uuid4())
    at = datetime.now(UTC) - timedelta(hours=1)
    original = make_event(event_id=eid, occurred_at=at.isoformat(), org_id="acme", workspace_id=None,
                          scope="service", category="vm", action="vm.delete", status="SUCCESS",
                          description="Deleted VM train-a100-4", detail=None, source="compute-api")
    rewrite_http = {**original, "description": "nothing happened here", "status": "FAILED"}
    shadow_http = {**original, "occurred_at": (at + timedelta(hours=2)).isoformat(), "description": "shadow"}
    rewrite_kafka = {**original, "actor": {**original["actor"], "id": "u-innocent"}, "description": "kafka rewrite"}
    svc = {"Authorization": "Bearer " + service_token(s, ["acme"], sub="svc-compute"), **NDJSON}
    async with AuditProducer(broker.bootstrap, s.topic) as producer, \
            client(create_app(s, store, producer=producer)) as c, \
            BackgroundWorker(ConsumerWorker(s, store)) as w:
        r = await c.post("/v1/ingest", content=line(original), headers=svc)
        assert r.status_code == 202, r.text
        await w.until(lambda st: st["stored"] >= 1)
        for ev in (rewrite_http, shadow_http):
            r = await c.post("/v1/ingest", content=line(ev), headers=svc)
            assert r.status_code == 202, r.text
        await raw_send(broker.bootstrap, s.topic, json.dumps(rewrite_kafka).encode())
        await raw_send(broker.bootstrap, s.topic, line(original))  # an identical retry: silent
        await w.until(lambda st: st["conflicts"] >= 3 and st["retries_dropped"] >= 1)

        assert [(r["description"], r["publisher_via"], r["publisher_id"]) for r in stored_rows(store, eid)] == [
            ("Deleted VM train-a100-4", "http", "svc-compute")]
        h = owner_headers(s)
        detail = (await c.get(f"/v1/events/{eid}", headers=h)).json()
        assert detail["description"] == "Deleted VM train-a100-4" and detail["status"] == "SUCCESS"
        assert detail["publisher"] == {"via": "http", "id": "svc-compute"}
        page = (await c.get("/v1/events", params={"scope": "service", "limit": 100}, headers=h)).json()["data"]
        assert [e["description"] for e in page if e["event_id"] == eid] == ["Deleted VM train-a100-4"]
        export = (await c.get("/v1/events/export", params={"scope": "service", "format": "ndjson"}, headers=h)).text
        lines = [json.loads(ln) for ln in export.splitlines() if eid in ln]
        assert [(e["description"], e["publisher"]["via"]) for e in lines] == [("Deleted VM train-a100-4", "http")]
        stats = (await c.get("/v1/stats", params={"scope": "service", "status": "FAILED"}, headers=h)).json()
        assert stats["total"] == 0  # the FAILED rewrite was never counted
        conflicts = (await c.get("/v1/conflicts", headers=h)).json()["data"]
        assert sorted(x["content"]["description"] for x in conflicts) == ["kafka rewrite", "nothing happened here",
                                                                          "shadow"]
        assert sorted((x["publisher"]["via"], x["publisher"]["id"]) for x in conflicts) == [
            ("http", "svc-compute"), ("http", "svc-compute"), ("kafka", None)]
        admin = {"Authorization": "Bearer " + mint_token(s.jwt_secret or "", sub="u-a", email="a@acme.example",
                                                         org_id="acme", role="workspace_admin", workspaces=["w"],
                                                         ttl_seconds=600)}
        assert (await c.get("/v1/conflicts", headers=admin)).status_code == 403
        integrity = (await c.get("/v1/integrity", headers=h)).json()
        assert integrity["counts"]["conflicting"] == 1 and eid in integrity["findings"]["conflicting"]


async def test_forged_who_read_events_are_never_stored(settings: Settings, store: Store, broker: Any) -> None:
    s = settings
    forged = make_event(org_id="acme", scope="organization", category="audit_log", action="audit_log.export",
                        source="query-api", actor={"id": "u-framed", "email": "framed@acme.example", "type": "user"})
    svc = {"Authorization": "Bearer " + service_token(s, ["acme"]), **NDJSON}
    async with AuditProducer(broker.bootstrap, s.topic) as producer, \
            client(create_app(s, store, producer=producer)) as c, \
            BackgroundWorker(ConsumerWorker(s, store)) as w:
        r = await c.post("/v1/ingest", content=line(forged), headers=svc)
        assert r.status_code == 422, r.text
        assert [(x["field"], x["reason"].split(":")[0]) for x in r.json()["rejected"]] == [("category", "reserved")]
        with pytest.raises(InvalidEvent, match="reserved"):
            await producer.send(forged)  # the SDK refuses it before it leaves the service
        value = json.dumps(forged).encode()
        other = ServerKeys("another-server-secret-0123456789abcdef")
        await raw_send(broker.bootstrap, s.topic, value)  # a raw producer
        await raw_send(broker.bootstrap, s.topic, value, signed_headers(other, API, value))  # signed with a guess
        real = signed_headers(s.server_keys(), API, b"{}")  # a genuine MAC, copied onto other bytes
        await raw_send(broker.bootstrap, s.topic, value, real)
        # a genuine read, recorded by the API itself
        assert (await c.get("/v1/events", headers=owner_headers(s))).status_code == 200
        await w.until(lambda st: st["dead_lettered"] >= 3 and st["stored"] >= 1)
        dead = await dlq_reasons(broker.bootstrap, s.dlq_topic, 3)
        assert len(dead) == 3 and all(d["value"] == value for d in dead)
        assert all("reserved" in json.dumps({k: v for k, v in d.items() if k != "value"}) for d in dead), dead
        rows = store.client().query("SELECT actor_id, publisher_via, publisher_id FROM audit_events FINAL "
                                    "WHERE category = 'audit_log'").result_rows
        assert rows == [("u-owner", "api", "query-api")]


def test_publisher_headers_prove_nothing_once_moved_or_edited() -> None:
    keys = ServerKeys("0123456789abcdef0123456789abcdef-x")
    h = signed_headers(keys, ("http", "svc-a"), b'{"a":1}')
    assert publisher_of(keys, h, b'{"a":1}') == ("http", "svc-a")
    assert publisher_of(keys, h, b'{"a":2}') == KAFKA
    edited = [(k, b"http:svc-b" if k == "auditlog-publisher" else v) for k, v in h]
    assert publisher_of(keys, edited, b'{"a":1}') == KAFKA
    assert publisher_of(keys, [("auditlog-publisher", b"api:query-api")], b"x") == KAFKA
    assert publisher_of(keys, None, b"x") == KAFKA


def test_fingerprint_is_the_same_in_python_and_clickhouse(store: Store) -> None:
    ids = [uuid.uuid4() for _ in range(50)]
    orgs = ["acme", "globex", "ä-org", ""]
    res = store.client().query(
        f"SELECT org_id, toString(event_id), {FINGERPRINT_SQL} FROM "
        "(SELECT arrayJoin({o:Array(String)}) AS org_id, arrayJoin(arrayMap(x -> toUUID(x), {e:Array(String)})) "
        "AS event_id)", parameters={"o": orgs, "e": [str(i) for i in ids]}).result_rows
    assert len(res) == len(orgs) * len(ids)
    for org, eid, fp in res:
        assert int(fp) == fingerprint(org, uuid.UUID(eid))


def test_known_ids_finds_stored_and_repeated_keys() -> None:
    base = np.array([fingerprint("acme", uuid.uuid4()) for _ in range(1000)], dtype=np.uint64)
    known = KnownIds(base)
    new = np.array([fingerprint("acme", uuid.uuid4()) for _ in range(500)], dtype=np.uint64)
    assert not suspects(known, new).size
    known.add(new[:10])
    probe = np.concatenate([new[5:15], base[:3], new[400:401], new[400:401]])
    assert sorted(suspects(known, probe).tolist()) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]


def test_known_ids_merge_and_unknown_agree_with_a_plain_set() -> None:
    rng = np.random.default_rng(7)
    known, plain = KnownIds(np.array([5, 1, 5], dtype=np.uint64)), {1, 5}
    for _ in range(60):  # small adds, and merges into the base (more than 16 pending arrays)
        keys = rng.integers(0, 400, int(rng.integers(0, 12)), dtype=np.uint64)
        known.add(keys)
        plain |= set(keys.tolist())
        probe = rng.integers(0, 450, 50, dtype=np.uint64)
        assert known.maybe_known(probe).tolist() == [k in plain for k in probe.tolist()]
        assert sorted(known.unknown(probe).tolist()) == sorted(k for k in probe.tolist() if k not in plain)
        expect = [i for i, k in enumerate(probe.tolist()) if k in plain or probe.tolist().count(k) > 1]
        assert suspects(known, probe).tolist() == expect


async def test_a_refresh_reads_other_writers_keys_in_the_background_and_a_stale_set_is_refreshed_first(
        store: Store) -> None:
    """The guard's refresh skips this worker's own Kafka ranges (it has their keys) but not what it skipped as
    stored before (another worker's, maybe); it runs after an insert, and a check on a stale set refreshes first."""
    inserter = Inserter(store)
    try:
        guard = FirstWriteGuard(inserter, get_catalog(), await inserter.column_types(), refresh_seconds=0.05)
        await guard.load()
        now = datetime.now(UTC)

        def rows(partition: int, offsets: range) -> list[tuple[Any, ...]]:
            return [event_row(parse_event(make_event(org_id="acme")), now, "t", partition, o) for o in offsets]

        def keys(rs: list[tuple[Any, ...]]) -> list[int]:
            return [fingerprint(r[0], r[2]) for r in rs]

        mine, before, other = rows(0, range(10, 20)), rows(0, range(5, 10)), rows(1, range(0, 5))
        insert_rows(store, before + other)  # another worker: partition 1, and partition 0 up to offset 9
        insert_rows(store, mine)  # this worker took partition 0 with the stored watermark at 9
        chunk = Chunk("t", 0, list(range(5, 20)), [b"{}"] * 15, now, stored_up_to=9)
        job = FlushJob((PartitionBatch(TopicPartition("t", 0), 5, 19, rows=10, sources=[chunk]),))
        assert guard._own_ranges(time.monotonic()) == []
        guard.stored(np.array(keys(mine), dtype=np.uint64), job)
        assert guard._own_ranges(time.monotonic()) == [("t", 0, 10, 19)]
        task = guard._task
        assert task is not None  # due: started by the insert, not by the next check
        await task
        assert guard.known.maybe_known(np.array(keys(mine + before + other), dtype=np.uint64)).all()
        read, _ = await inserter.fingerprints(None, guard._own_ranges(time.monotonic()))
        assert sorted(read.tolist()) == sorted(keys(before + other))  # its own rows are not read back

        event = make_event(org_id="acme")
        insert_rows(store, [event_row(parse_event(event), now, "t", 2, 0)])  # another worker stores an event ...
        await asyncio.sleep(0.15)  # ... the set is now older than 2 * refresh_seconds: a check refreshes first
        chunk2 = Chunk("t", 3, [7], [json.dumps({**event, "description": "rewritten"}).encode()], now)
        batch = PartitionBatch(TopicPartition("t", 3), 7)
        batch.add_decoded(chunk2, guard._decoder.decode_chunk(chunk2, guard._encoder))
        checked = await guard.check(FlushJob((batch,)))  # ... that finds the rewrite of it
        assert (checked.rows, len(checked.conflicts), checked.retries) == (0, 1, 0)
        guard.close()
    finally:
        inserter.close()


def test_a_migration_resolves_existing_duplicates_to_the_earliest(chdb_url: str) -> None:
    store = Store(chdb_url, f"t_{uuid.uuid4().hex[:12]}")
    try:
        migrate(store, target=50)  # the store as it was before first-write-wins
        eid = str(uuid.uuid4())
        first = make_event(event_id=eid, org_id="acme", description="the original")
        same_key = {**first, "description": "rewritten later"}
        shadow = {**first, "occurred_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(), "description": "s"}
        t0 = datetime.now(UTC) - timedelta(minutes=10)
        rows = [event_row(parse_event(e), t0 + timedelta(seconds=i), "t", 0, i)
                for i, e in enumerate((first, same_key, shadow))]
        for r in rows:  # three inserts: three parts, not merged yet
            insert_rows(store, [r])
        migrate(store)
        left = store.client().query("SELECT description FROM audit_events WHERE event_id = toUUID({e:String})",
                                    parameters={"e": eid}).result_rows
        assert left == [("the original",)]
        aside = store.client().query("SELECT kafka_offset FROM audit_event_conflicts WHERE event_id = toUUID({e:String}) "
                                     "ORDER BY kafka_offset", parameters={"e": eid}).result_rows
        assert aside == [(1,), (2,)]
    finally:
        store.client().command(f"DROP DATABASE IF EXISTS {store.database} SYNC")


async def test_conflicts_are_only_the_callers_own_org(settings: Settings, store: Store, broker: Any) -> None:
    """GET /v1/conflicts: no token 401, a service token 403, another org's owner sees none of acme's."""
    s = settings
    eid = str(uuid.uuid4())
    first = make_event(event_id=eid, org_id="acme", description="first")
    async with client(create_app(s, store)) as c, BackgroundWorker(ConsumerWorker(s, store)) as w:
        for ev in (first, {**first, "description": "second"}):
            await raw_send(broker.bootstrap, s.topic, json.dumps(ev).encode())
        await w.until(lambda st: st["conflicts"] >= 1)
        assert (await c.get("/v1/conflicts")).status_code == 401
        svc = {"Authorization": "Bearer " + service_token(s, ["acme"])}
        assert (await c.get("/v1/conflicts", headers=svc)).status_code == 403
        other = {"Authorization": "Bearer " + mint_token(s.jwt_secret or "", sub="u-g", email="g@globex.example",
                                                         org_id="globex", role="org_owner", ttl_seconds=600)}
        r = await c.get("/v1/conflicts", headers=other)
        assert r.status_code == 200 and r.json()["data"] == []
        mine = (await c.get("/v1/conflicts", headers=owner_headers(s))).json()["data"]
        assert [x["event_id"] for x in mine] == [eid]
        for bad in ("0", "501", "NaN", "1e9"):
            r = await c.get("/v1/conflicts", params={"limit": bad}, headers=owner_headers(s))
            assert r.status_code == 422 and "error" in r.json(), (bad, r.text)


async def test_a_rewrite_inside_one_large_flush_is_kept_aside_and_the_rest_stored(settings: Settings, store: Store,
                                                                                 broker: Any) -> None:
    """Several chunks in one flush: only the chunk with the repeat is decoded again; every other row is stored."""
    s = settings.model_copy(update={"batch_max_seconds": 2.0, "batch_min_seconds": 2.0})
    events = [make_event(org_id="acme", description=f"e{i}") for i in range(1200)]
    events.insert(900, {**events[3], "description": "rewritten in the same flush"})
    events.insert(950, dict(events[5]))  # an identical repeat in the same flush
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
    await p.start()
    try:
        for ev in events:
            await p.send(s.topic, value=json.dumps(ev).encode(), key=b"acme", partition=0)
        await p.flush()
    finally:
        await p.stop()
    async with BackgroundWorker(ConsumerWorker(s, store)) as w:
        st = await w.until(lambda st: st["stored"] + st["conflicts"] + st["retries_dropped"] >= 1202)
    assert (st["stored"], st["conflicts"], st["retries_dropped"]) == (1200, 1, 1)
    rows = store.client().query("SELECT description FROM audit_events FINAL WHERE event_id = toUUID({e:String})",
                                parameters={"e": events[3]["event_id"]}).result_rows
    assert rows == [("e3",)]
    assert store.client().query("SELECT count() FROM audit_events FINAL").result_rows[0][0] == 1200
