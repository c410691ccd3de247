"""The contract every migration file must keep so that concurrent or repeated runs are harmless:
numbered uniquely, in the owner ranges, every statement idempotent by its form (IF NOT EXISTS, OR REPLACE,
IF EXISTS) or a backfill INSERT (run once under the migration's claim), and every statement parses with
ClickHouse's own parser (``formatQuery`` on chDB)."""

from __future__ import annotations

import re

import pytest

from auditlogkit.server.db.migration_sql import _statements, migration_files, render_migration
from auditlogkit.server.store import Store

IDEMPOTENT = [
    re.compile(r"^CREATE (?:TABLE|VIEW|MATERIALIZED VIEW|DICTIONARY|FUNCTION) IF NOT EXISTS\b", re.I),
    re.compile(r"^CREATE OR REPLACE (?:VIEW|TABLE|DICTIONARY|FUNCTION)\b", re.I),
    re.compile(r"^ALTER TABLE \S+ (?:(?:ADD|DROP|MODIFY|RENAME|CLEAR) (?:COLUMN|INDEX|PROJECTION|CONSTRAINT) IF (?:NOT )?EXISTS\b|MODIFY (?:TTL|SETTING|COMMENT)\b)", re.I),
    # a mutation that rebuilds an index (or projection) from the data: running it again, or twice at once, gives
    # the same files
    re.compile(r"^ALTER TABLE \S+ MATERIALIZE (?:INDEX|PROJECTION) \w+$", re.I),
    re.compile(r"^DROP (?:TABLE|VIEW|DICTIONARY) IF EXISTS\b", re.I),
    re.compile(r"^INSERT INTO \S+\s", re.I),  # backfills: applied once under the claim
    # a mutation that deletes a set of rows named by a subquery: a second run finds none of them
    re.compile(r"^ALTER TABLE \S+ DELETE WHERE .+ IN \(SELECT\b", re.I),
]


@pytest.mark.parametrize("migration", migration_files(), ids=lambda m: m.label)
def test_every_statement_is_idempotent_by_form(migration) -> None:  # type: ignore[no-untyped-def]
    for stmt in _statements(migration.sql):
        flat = " ".join(stmt.split())
        assert any(rx.match(flat) for rx in IDEMPOTENT), (
            f"{migration.label}: not safe to re-run or race; use IF NOT EXISTS / OR REPLACE / IF EXISTS:\n{flat[:200]}"
        )


def test_versions_unique_and_named() -> None:
    ms = migration_files()
    assert len({m.version for m in ms}) == len(ms)
    assert all(re.fullmatch(r"[a-z0-9_]+", m.name) for m in ms)


def test_every_statement_parses(store: Store) -> None:
    c = store.client()
    for m in migration_files():
        for stmt in render_migration(m.sql, "db_x", 400):
            out = c.query("SELECT formatQuery({q:String})", parameters={"q": stmt}).result_rows[0][0]
            assert out, f"{m.label}: {stmt[:120]}"
