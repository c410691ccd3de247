"""Tamper evidence (migration 0040, auditlog/db/integrity.py, ``auditlog verify``) on the real chDB engine.

Events reach ``audit_events`` the way the consumer writes them (its Inserter with dedup tokens) or straight
(``store_events``); then an "admin" edits, deletes, re-inserts or rewrites rows with plain SQL, and verify
must name exactly what changed, while producer retries, merges and expired rows stay quiet.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from auditlogkit.consumers.decode.native import NativeEncoder
from auditlogkit.consumers.store.inserter import Inserter
from auditlogkit.schemas.event import parse_event
from auditlogkit.schemas.rows import EVENT_COLUMNS, EVENTS_TABLE, PROVENANCE_COLUMNS, event_row
from auditlogkit.server.app.cli import main
from auditlogkit.server.db import integrity
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.store import Store
from tests.factories import make_event, random_events
from tests.integration.test_api_helpers import store_events

DIGESTS = integrity.DIGESTS_TABLE
RECHECK = 1.0  # seconds a deleted/unrecorded finding is looked at again (nothing inserts concurrently here)


@pytest.fixture(autouse=True)
def _reset_logging() -> Any:
    yield
    structlog.reset_defaults()  # `auditlog verify` binds logging to this test's (then closed) stderr


@pytest.fixture
def env(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("AUDITLOG_CLICKHOUSE_URL", store.url)
    monkeypatch.setenv("AUDITLOG_CLICKHOUSE_DATABASE", store.database)
    monkeypatch.setenv("AUDITLOG_INTEGRITY_RECHECK_SECONDS", str(RECHECK))
    return store


def counts(store: Store, **kw: Any) -> dict[str, int]:
    return integrity.verify(store, **{"recheck_seconds": RECHECK, **kw}).counts


def findings(store: Store) -> dict[str, set[str]]:
    r = integrity.verify(store, recheck_seconds=RECHECK)
    return {s: {e for _, e in r.samples.get(s, [])} for s in integrity.FINDINGS if r.counts[s]}


def mutate(store: Store, sql: str, **params: Any) -> None:
    store.client().command(sql, parameters=params, settings={"mutations_sync": 2})


def digests(store: Store) -> int:
    return int(store.client().query(f"SELECT count() FROM {DIGESTS}").result_rows[0][0])


# ----- the hash ------------------------------------------------------------------------------------------
def test_content_hash_is_frozen_and_matches_the_python_reference(store: Store) -> None:
    """Databases keep the expression their view was created with: changing it silently would make every old
    event look altered. A new hash needs a new migration and a new tag."""
    assert hashlib.sha256(integrity.CONTENT_SHA256_SQL.encode()).hexdigest()[:16] == "76660fd4ede2f61c", (
        hashlib.sha256(integrity.CONTENT_SHA256_SQL.encode()).hexdigest()[:16])
    # written out, not derived from the table's columns (tests/unit/test_columns.py: a column added later is in no
    # version); today every EVENT.md field and no provenance
    assert integrity.CONTENT_COLUMNS == integrity.CONTENT_COLUMNS_V1
    assert set(integrity.CONTENT_COLUMNS) == set(EVENT_COLUMNS) - set(PROVENANCE_COLUMNS)
    a = make_event(target={"name": None}, detail=None, workspace_id=None)
    b = {**a, "target": {**a["target"], "name": ""}, "occurred_at": "2026-01-02T03:04:05.678Z"}
    store_events(store, [a, make_event(description="x\u00e9:12:~")])
    store_events(store, [b])
    res = store.client().query(f"SELECT *, content_sha256 AS h FROM {EVENTS_TABLE} "
                               f"JOIN {DIGESTS} USING (org_id, event_id, kafka_offset)")
    rows = list(res.named_results())
    assert len(rows) == 3
    for r in rows:
        assert bytes(r["h"]) == integrity.content_sha256(r)
    by_name = {r["target_name"]: bytes(r["h"]) for r in rows if r["event_id"] == uuid.UUID(a["event_id"])}
    assert by_name[None] != by_name[""]  # NULL is not ''


# ----- verify --------------------------------------------------------------------------------------------
def test_clean_database_verifies(env: Store, capsys: pytest.CaptureFixture[str]) -> None:
    evs = random_events(300, seed=3)
    store_events(env, evs)
    c = counts(env)
    assert c["verified"] == 300 and sum(c.values()) == 300
    assert counts(env, org="acme")["verified"] == sum(e["org_id"] == "acme" for e in evs)
    assert main(["verify"]) == 0
    assert "verified 300, altered 0, deleted 0, unrecorded 0, conflicting 0" in capsys.readouterr().out


def test_edit_is_reported_as_altered(env: Store, capsys: pytest.CaptureFixture[str]) -> None:
    evs = random_events(50, seed=4)
    store_events(env, evs)
    victim = evs[7]["event_id"]
    mutate(env, f"ALTER TABLE {EVENTS_TABLE} UPDATE description = 'edited' WHERE event_id = {{e:UUID}}", e=victim)
    assert findings(env) == {"altered": {victim}}
    assert counts(env)["verified"] == 49
    assert main(["verify"]) == 1
    assert f"altered: {evs[7]['org_id']} {victim}" in capsys.readouterr().out


def test_delete_is_reported_as_deleted(env: Store) -> None:
    evs = random_events(50, seed=5)
    store_events(env, evs)
    gone = {evs[1]["event_id"], evs[2]["event_id"]}
    mutate(env, f"ALTER TABLE {EVENTS_TABLE} DELETE WHERE event_id IN {{e:Array(UUID)}}", e=list(gone))
    assert findings(env) == {"deleted": gone}
    env.client().command(f"DELETE FROM {EVENTS_TABLE} WHERE event_id = {{e:UUID}}",
                         parameters={"e": evs[3]["event_id"]})  # lightweight delete: same verdict
    assert findings(env) == {"deleted": gone | {evs[3]["event_id"]}}
    assert main(["verify"]) == 1


def test_row_without_digest_is_unrecorded(env: Store) -> None:
    evs = random_events(20, seed=6)
    store_events(env, evs)
    mutate(env, f"ALTER TABLE {DIGESTS} DELETE WHERE event_id = {{e:UUID}}", e=evs[0]["event_id"])
    assert findings(env) == {"unrecorded": {evs[0]["event_id"]}}


def test_producer_retry_verifies_clean_also_after_merge(env: Store) -> None:
    evs = random_events(30, seed=7)
    store_events(env, evs)
    store_events(env, evs[:5])  # the same events again, from later offsets
    assert digests(env) == 35
    assert counts(env)["verified"] == 30 and findings(env) == {}
    env.client().command(f"OPTIMIZE TABLE {EVENTS_TABLE} FINAL")
    env.client().command(f"OPTIMIZE TABLE {DIGESTS} FINAL")
    assert env.client().query(f"SELECT count() FROM {EVENTS_TABLE}").result_rows[0][0] == 30
    assert counts(env)["verified"] == 30 and findings(env) == {}
    assert main(["verify"]) == 0


def test_reused_event_id_with_other_content_is_conflicting(env: Store) -> None:
    ev = make_event()
    store_events(env, [ev, *random_events(10, seed=8)])
    store_events(env, [{**ev, "description": "same id, other content"}])  # replacement row, digest recorded
    assert findings(env) == {"conflicting": {ev["event_id"]}}
    assert main(["verify"]) == 1


def test_consumer_retry_with_the_same_dedup_token_adds_no_digest(store: Store) -> None:
    """What the consumer does when an INSERT timed out after it landed: the same rows, the same token."""
    now = datetime.now(UTC)
    rows = [event_row(parse_event(e), now, "audit.events", 2, i) for i, e in enumerate(random_events(40, seed=9))]
    ins = Inserter(store)
    try:
        block = NativeEncoder(ins._types()).encode(rows)
        for _ in range(3):
            ins._insert([block], len(rows), "audit.events:2:0-39")
    finally:
        ins.close()
    assert store.client().query(f"SELECT count() FROM {EVENTS_TABLE}").result_rows[0][0] == 40
    assert digests(store) == 40
    assert counts(store)["verified"] == 40 and findings(store) == {}


def test_backfill_covers_events_stored_before_the_migration(chdb_url: str) -> None:
    s = Store(chdb_url, f"t_{uuid.uuid4().hex[:12]}")
    try:
        migrate(s, target=39)
        store_events(s, random_events(25, seed=10))
        migrate(s)
        assert digests(s) == 25
        assert counts(s)["verified"] == 25 and findings(s) == {}
    finally:
        s.client().command(f"DROP DATABASE IF EXISTS {s.database} SYNC")


def test_rows_near_the_retention_limit_are_skipped(store: Store) -> None:
    """TTL deletes run at different times in the two tables: rows within the margin of the limit are not
    findings. The store's retention is the migrate default (400 days)."""
    now = datetime.now(UTC)
    old = make_event(occurred_at=(now - timedelta(days=399)).isoformat().replace("+00:00", "Z"))
    row = list(event_row(parse_event(old), now, "direct", 9, 1))
    store.client().insert(EVENTS_TABLE, [row], column_names=list(EVENT_COLUMNS))
    store_events(store, random_events(10, seed=11))
    mutate(store, f"ALTER TABLE {DIGESTS} DELETE WHERE event_id = {{e:UUID}}", e=old["event_id"])
    c = counts(store)
    assert c["expired"] == 1 and c["verified"] == 10 and findings(store) == {}
    assert findings_with_margin(store, 0.0) == {"unrecorded": {old["event_id"]}}


def findings_with_margin(store: Store, margin: float) -> dict[str, set[str]]:
    r = integrity.verify(store, margin_days=margin, recheck_seconds=RECHECK)
    return {s: {e for _, e in r.samples.get(s, [])} for s in integrity.FINDINGS if r.counts[s]}


# ----- checkpoints -------------------------------------------------------------------------------------
def rewrite_both(store: Store, event_id: str, description: str) -> None:
    """An admin who edits an event and makes its digest match: verify alone cannot see it."""
    mutate(store, f"ALTER TABLE {EVENTS_TABLE} UPDATE description = {{d:String}} WHERE event_id = {{e:UUID}}",
           d=description, e=event_id)
    new = store.client().query(f"SELECT hex({integrity.CONTENT_SHA256_SQL}) FROM {EVENTS_TABLE} "
                               "WHERE event_id = {e:UUID}", parameters={"e": event_id}).result_rows[0][0]
    mutate(store, f"ALTER TABLE {DIGESTS} UPDATE content_sha256 = unhex({{h:String}}) WHERE event_id = {{e:UUID}}",
           h=new, e=event_id)


def test_checkpoint_exposes_a_rewrite_of_both_tables(env: Store, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    evs = random_events(200, seed=12)
    store_events(env, evs)
    cp = tmp_path / "cp.json"
    assert main(["verify", "--checkpoint-out", str(cp)]) == 0
    saved = json.loads(cp.read_text())
    assert saved["count"] == 200 and len(saved["root"]) == 64 and saved["offsets"]["direct"]["0"] >= 199
    # later events, a producer retry and merges do not disturb the checkpoint
    store_events(env, random_events(20, seed=13))
    store_events(env, evs[:3])
    env.client().command(f"OPTIMIZE TABLE {DIGESTS} FINAL")
    assert main(["verify", "--against", str(cp)]) == 0
    assert "digests match checkpoint" in capsys.readouterr().out

    rewrite_both(env, evs[42]["event_id"], "nothing to see here")
    assert findings(env) == {}  # verify alone is fooled: both tables agree
    assert main(["verify"]) == 0
    capsys.readouterr()
    assert main(["verify", "--against", str(cp)]) == 1
    out = capsys.readouterr().out
    assert "DIGESTS CHANGED" in out and "1 of" in out
    cmp = integrity.check_against(env, saved)
    assert [(c["topic"], c["partition"]) for c in cmp.changed] == [("direct", 0)]
    assert cmp.changed[0]["then"]["count"] == cmp.changed[0]["now"]["count"]


def test_checkpoint_exposes_deleted_digests_and_rows(store: Store) -> None:
    evs = random_events(40, seed=14)
    store_events(store, evs)
    cp = json.loads(integrity.make_checkpoint(store).to_json())
    for table in (EVENTS_TABLE, DIGESTS):
        mutate(store, f"ALTER TABLE {table} DELETE WHERE event_id = {{e:UUID}}", e=evs[5]["event_id"])
    assert findings(store) == {}
    cmp = integrity.check_against(store, cp)
    assert len(cmp.changed) == 1
    assert cmp.changed[0]["now"] is None or cmp.changed[0]["now"]["count"] == cmp.changed[0]["then"]["count"] - 1


def test_a_digest_that_lands_while_verifying_is_not_a_finding(env: Store) -> None:
    """An insert shows its row before its view has written the digest: a row without a digest that has one a
    few looks later (a busy inserter) is verified, not reported; one that stays without is reported."""
    import threading

    evs = random_events(12, seed=21)
    store_events(env, evs)
    late, gone = evs[0]["event_id"], evs[1]["event_id"]
    saved = env.client().query(f"SELECT * FROM {DIGESTS} WHERE event_id = {{e:UUID}}", parameters={"e": late})
    mutate(env, f"ALTER TABLE {DIGESTS} DELETE WHERE event_id IN {{e:Array(UUID)}}", e=[late, gone])
    out: list[integrity.Report] = []
    t = threading.Thread(target=lambda: out.append(integrity.verify(env, recheck_seconds=4.0)))
    t.start()
    threading.Event().wait(1.8)  # verify has looked again more than once and is still waiting
    env.client().insert(DIGESTS, saved.result_rows, column_names=list(saved.column_names))
    t.join(30)
    report = out[0]
    assert report.counts["unrecorded"] == 1 and report.counts["verified"] == 11, report.counts
    assert [e for _, e in report.samples["unrecorded"]] == [gone]


def test_verify_while_events_are_being_inserted_reports_nothing(env: Store) -> None:
    """Each insert shows its rows and their digests at slightly different moments; a verify running beside a
    steady stream of inserts must still come out clean, every time (the ids it looks at again are those of its
    own first look, not of a later one)."""
    import threading
    import time

    stop = threading.Event()
    inserted: list[int] = []

    def insert() -> None:
        seed = 1000
        while not stop.is_set():
            inserted.append(store_events(env, random_events(200, seed=seed)))
            seed += 1

    def after_another_insert() -> None:  # the inserts really run beside the checks, however slow the machine
        n, deadline = len(inserted), time.monotonic() + 30
        while len(inserted) == n:
            assert time.monotonic() < deadline and t.is_alive(), "no insert within 30 s"
            time.sleep(0.01)

    t = threading.Thread(target=insert)
    t.start()
    reports = []
    try:
        for _ in range(8):
            after_another_insert()
            reports.append(integrity.verify(env, recheck_seconds=5.0))
    finally:
        stop.set()
        t.join(30)
    assert [r.counts for r in reports if not r.clean] == []
    assert reports[-1].counts["verified"] > reports[0].counts["verified"]
