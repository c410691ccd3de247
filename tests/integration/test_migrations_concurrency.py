"""Migrations on the real chDB engine: versioned, recorded once, idempotent, safe when run concurrently,
retention changes applied as ALTER ... MODIFY TTL, crashed/failed migrators recovered.

Concurrency: chDB allows one engine path per process, so two *processes* cannot share a database here.
The equivalent shown here is N threads, each with its own client (its own chDB connection) on one engine,
racing through ``migrate`` with no lock in Python between them: the only coordination is the claim table in
the database, exactly what separate processes on a ClickHouse server rely on.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

import auditlogkit.server.db.migrations as store_mod
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.event import parse_event
from auditlogkit.schemas.rows import event_row
from auditlogkit.server.db.migrations import (
    Migration,
    MigrationError,
    migrate,
    migration_files,
    retention_tables,
    ttl_days,
)
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.test_api_helpers import insert_rows


@pytest.fixture
def fresh(chdb_url: str) -> Iterator[Store]:
    """An empty, NOT yet migrated database on the process's chDB engine."""
    s = Store(chdb_url, f"m_{uuid.uuid4().hex[:12]}")
    yield s
    s.client().command(f"DROP DATABASE IF EXISTS {s.database} SYNC")
    s.close()


def _insert(store: Store, events: list[dict]) -> None:
    cat = get_catalog()
    now = datetime.now(UTC)
    rows = [event_row(parse_event(e, cat), now, "t", 0, i) for i, e in enumerate(events)]
    insert_rows(store, rows)


def _recorded(store: Store) -> list[int]:
    """Every row of schema_migrations WITHOUT FINAL: duplicates would show here."""
    return sorted(r[0] for r in store.client().query("SELECT version FROM schema_migrations").result_rows)


def test_migrate_twice_applies_everything_once(fresh: Store) -> None:
    first = migrate(fresh)
    versions = [m.version for m in migration_files()]
    assert [a for a in first if a[:4].isdigit()] == [m.label for m in migration_files()]
    assert migrate(fresh) == []
    assert _recorded(fresh) == versions
    checksums = dict(fresh.client().query("SELECT version, checksum FROM schema_migrations FINAL").result_rows)
    assert checksums == {m.version: m.checksum for m in migration_files()}


def test_concurrent_migrators_apply_each_version_exactly_once(fresh: Store) -> None:
    n = 4
    results: list[list[str]] = [[] for _ in range(n)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        s = Store(fresh.url, fresh.database)  # own Store -> own client in this thread
        try:
            barrier.wait()
            results[i] = migrate(s)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    labels = [m.label for m in migration_files()]
    applied = [a for r in results for a in r if a[:4].isdigit()]
    # Every version applied by exactly one migrator, none twice.
    assert sorted(applied) == sorted(labels)
    assert _recorded(fresh) == [m.version for m in migration_files()]
    c = fresh.client()
    # One winning claim per version; the catalog loaded once (not once per migrator).
    claims = c.query("SELECT version, count() FROM schema_migration_claims GROUP BY version").result_rows
    assert all(cnt == 1 for _, cnt in claims) and len(claims) == len(labels)
    n_actions = len(get_catalog().all_actions())
    assert c.query("SELECT count() FROM catalog_actions").result_rows[0][0] == n_actions
    assert migrate(fresh) == []


def test_backfill_runs_once_and_counts_existing_rows(fresh: Store) -> None:
    """Upgrading a database that already holds events: 0032 backfills daily counts exactly once."""
    migrate(fresh, target=31)
    events = [make_event(org_id="acme"), make_event(org_id="acme", status="FAILED"), make_event(org_id="globex")]
    _insert(fresh, events)
    applied = migrate(fresh)
    assert "0032_daily_counts" in applied
    assert migrate(fresh) == []
    total = fresh.client().query("SELECT sum(events) FROM audit_daily_counts").result_rows[0][0]
    assert total == 3
    _insert(fresh, [make_event(org_id="acme")])  # after the view exists: counted by the view
    assert fresh.client().query("SELECT sum(events) FROM audit_daily_counts").result_rows[0][0] == 4


def test_retention_change_is_a_migration(fresh: Store) -> None:
    assert migrate(fresh, 400)
    assert ttl_days(fresh) == 400
    old = make_event(occurred_at=(datetime.now(UTC) - timedelta(days=60)).isoformat())
    new = make_event(occurred_at=(datetime.now(UTC) - timedelta(days=2)).isoformat())
    _insert(fresh, [old, new])
    changed = migrate(fresh, 30)
    assert sorted(changed) == sorted(f"ttl:{t}=30d" for t in retention_tables())
    for table in retention_tables():
        assert ttl_days(fresh, table) == 30
    ddl = fresh.client().query("SHOW CREATE TABLE audit_events").result_rows[0][0]
    assert "toIntervalDay(30)" in ddl and "toIntervalDay(400)" not in ddl
    fresh.client().command("OPTIMIZE TABLE audit_events FINAL")
    ids = {str(r[0]) for r in fresh.client().query("SELECT event_id FROM audit_events").result_rows}
    assert ids == {new["event_id"]}  # the 60-day-old event is past the new retention
    assert migrate(fresh, 30) == []  # nothing to do when the setting did not change


def test_stale_claim_of_a_crashed_migrator_is_taken_over(fresh: Store) -> None:
    migrate(fresh, target=1)
    nxt = next(m for m in migration_files() if m.version > 1)
    c = fresh.client()
    c.command(
        "INSERT INTO schema_migration_claims SELECT {v:UInt32}, 0, 'dead-host:1:1:x', now64(3) - INTERVAL 1 HOUR",
        parameters={"v": nxt.version},
    )
    applied = migrate(fresh, lease_seconds=60)
    assert nxt.label in applied
    attempts = c.query(
        "SELECT attempt FROM schema_migration_claims WHERE version = {v:UInt32} ORDER BY attempt",
        parameters={"v": nxt.version},
    ).result_rows
    assert [a for (a,) in attempts] == [0, 1]


def test_live_claim_is_waited_for_then_reported(fresh: Store) -> None:
    migrate(fresh, target=1)
    nxt = next(m for m in migration_files() if m.version > 1)
    fresh.client().command(
        "INSERT INTO schema_migration_claims SELECT {v:UInt32}, 0, 'busy-host:1:1:x', now64(3)",
        parameters={"v": nxt.version},
    )
    with pytest.raises(MigrationError, match="being applied by another migrator"):
        migrate(fresh, lease_seconds=600, wait_seconds=0.5)


def test_a_migrator_that_loses_the_claim_race_waits_instead_of_moving_on(
    fresh: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two migrators both see no claim and both insert attempt 0; the loser must wait for the winner's
    version, never treat it as done and run the next one (which then fails on a table not yet created)."""
    migrate(fresh, target=1)
    later = [m for m in migration_files() if m.version > 1]
    nxt = later[0]
    real = store_mod._Migrator._insert_claim

    def rival_first(self: store_mod._Migrator, version: int, attempt: int, owner: str, stale: bool = False) -> None:
        if version == nxt.version and not stale:  # the rival's insert lands between our read and our insert
            self.c.command(
                f"INSERT INTO {self.db}.schema_migration_claims SELECT {{v:UInt32}}, {{a:UInt32}}, 'rival:1:1:x', "
                "now64(3) - INTERVAL 1 SECOND",
                parameters={"v": version, "a": attempt},
            )
        real(self, version, attempt, owner, stale)

    monkeypatch.setattr(store_mod._Migrator, "_insert_claim", rival_first)
    with pytest.raises(MigrationError, match=f"{nxt.label} is being applied by another migrator"):
        migrate(fresh, lease_seconds=600, wait_seconds=0.5)
    assert _recorded(fresh) == [1]  # nothing after the rival's version ran


def test_failed_migration_releases_its_claim(fresh: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    migrate(fresh)
    broken = Migration(9999, "broken", "CREATE TABLE IF NOT EXISTS {db}.x (a UInt8) ENGINE = NoSuchEngine;")
    files = [*migration_files(), broken]
    monkeypatch.setattr(store_mod, "migration_files", lambda: files)
    with pytest.raises(MigrationError, match="9999_broken failed"):
        migrate(fresh)
    fixed = Migration(9999, "broken", "CREATE TABLE IF NOT EXISTS {db}.x (a UInt8) ENGINE = MergeTree ORDER BY a;")
    files[-1] = fixed
    assert migrate(fresh) == ["9999_broken"]  # no waiting for a lease: the failed run released it
