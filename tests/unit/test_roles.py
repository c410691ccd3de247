"""Least-privilege SQL of auditlogkit.server.db.roles: what it grants (and never grants), that ClickHouse's own parser
accepts every statement, and what the embedded engine (chDB) can and cannot execute.

Measured on chDB 4.4 / ClickHouse 26.9 (embedded): no writable access storage (``system.user_directories``
lists only ``users_xml``; a ``user_directories`` section in a config file is ignored), so CREATE ROLE /
CREATE USER / CREATE ROW POLICY fail, and a session cannot switch users (EXECUTE AS is disabled). The roles
therefore run on a ClickHouse server: ``tests/server/test_server_access.py`` (testcontainers). What chDB does
enforce is the ``readonly`` setting the read-only roles carry, tested here.
"""

from __future__ import annotations

import hashlib
import re

import clickhouse_connect
import pytest

from auditlogkit.schemas.rows import EVENTS_TABLE
from auditlogkit.server.db import roles
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.store import Store


def test_writer_may_only_insert_events_and_conflicts_and_read_what_the_first_write_check_needs() -> None:
    grants = roles.granted_privileges(roles.role_statements("auditlog"))
    writer = sorted((p, o) for p, o, g in grants if g == roles.WRITER)
    assert writer == sorted(
        [("INSERT", f"auditlog.{EVENTS_TABLE}"), ("INSERT", "auditlog.audit_event_conflicts")]
        + [("SELECT", f"auditlog.{t}") for t in roles.WRITER_READABLE]
    )
    assert set(roles.WRITER_READABLE) == {"audit_events_offsets", EVENTS_TABLE, "audit_event_digests"}


def test_streams_role_writes_only_the_streams_tables_and_never_events() -> None:
    grants = roles.granted_privileges(roles.role_statements("auditlog", local_suffix_for=[EVENTS_TABLE]))
    streams = sorted((p, o) for p, o, g in grants if g == roles.STREAMS)
    assert streams == sorted(
        [("INSERT", f"auditlog.{t}") for t in ("audit_streams", "audit_stream_positions", "audit_stream_leases")]
        + [("SELECT", f"auditlog.{t}") for t in ("audit_streams", "audit_stream_positions", "audit_stream_leases",
                                                 "audit_events_offsets")]
        + [("SELECT", f"auditlog.{EVENTS_TABLE}"), ("SELECT", f"auditlog.{EVENTS_TABLE}_local")]
    )
    policy = next(s for s in roles.role_statements("auditlog") if "auditlog_reader_all_rows" in s)
    assert policy.endswith(f"TO {roles.READER}, {roles.WRITER}, {roles.STREAMS}")  # every org's rows: it delivers all
    assert roles.service_user_statements("auditlog_streams", "streams", password="pw")[2] == \
        "GRANT auditlog_streams TO auditlog_streams"
    with pytest.raises(ValueError, match="service users hold one of"):
        roles.service_user_statements("x", "analyst", password="pw")


def test_reader_and_analyst_only_select() -> None:
    grants = roles.granted_privileges(roles.role_statements("auditlog"))
    assert {p for p, _, g in grants if g in (roles.READER, roles.ANALYST)} == {"SELECT"}
    analyst_objects = {o for _, o, g in grants if g == roles.ANALYST}
    assert analyst_objects == {f"auditlog.{t}" for t in roles.ANALYST_TABLES}


def test_no_role_can_alter_delete_or_truncate() -> None:
    stmts = roles.role_statements("auditlog", cluster="c1")
    stmts += roles.analyst_user_statements("auditlog", "alice", "acme", password="pw")
    stmts += roles.service_user_statements("auditlog_api", "reader", password="pw")
    privileges = {p for p, _, _ in roles.granted_privileges(stmts)}
    assert privileges <= {"INSERT", "SELECT"}
    assert not privileges & set(roles.FORBIDDEN_PRIVILEGES)
    for s in stmts:  # the only other GRANTs hand one of our roles to a user
        m = re.match(r"^GRANT(?: ON CLUSTER \w+)? (\w+) TO (\w+)$", s)
        if m:
            assert m.group(1) in roles.ROLES


def test_digests_are_readable_but_never_writable() -> None:
    """Tamper evidence (migration 0040): the reader and analysts may read the digests (analysts through the
    per-org policy), the writer only reads them (the first-write check; its INSERT into audit_events fires a SQL
    SECURITY DEFINER view), and no role holds anything but SELECT on them."""
    digests = "audit_event_digests"
    assert digests in roles.APPEND_ONLY_TABLES and digests in roles.ORG_SCOPED_TABLES
    stmts = roles.role_statements("auditlog", local_suffix_for=[EVENTS_TABLE, digests])
    stmts += roles.analyst_user_statements("auditlog", "alice", "acme", password="pw",
                                           local_suffix_for=[EVENTS_TABLE, digests])
    grants = roles.granted_privileges(stmts)
    on_digests = {(p, g) for p, o, g in grants if o.split(".")[1].removesuffix("_local") == digests}
    assert on_digests == {("SELECT", roles.ANALYST), ("SELECT", roles.WRITER)}
    assert ("SELECT", "auditlog.*", roles.READER) in grants  # the reader's database-wide SELECT covers them
    for name in ("auditlog_reader_all_rows", "auditlog_analyst_no_org", "auditlog_org_alice"):
        policy = next(s for s in stmts if f"ROW POLICY OR REPLACE {name} " in s)
        assert f"auditlog.{digests}, auditlog.{digests}_local" in policy, name


def test_read_only_roles_carry_const_readonly() -> None:
    stmts = roles.role_statements("auditlog")
    for role in (roles.READER, roles.ANALYST):
        assert f"ALTER ROLE {role} SETTINGS readonly = 2 CONST" in stmts


def test_analyst_policies_fail_closed_and_per_org() -> None:
    stmts = roles.role_statements("db1")
    deny = next(s for s in stmts if "auditlog_analyst_no_org" in s)
    assert "USING 0 TO auditlog_analyst" in deny
    for t in roles.ORG_SCOPED_TABLES:
        assert f"db1.{t}" in deny
    user = roles.analyst_user_statements("db1", "bob", "globex", password="s3cret")
    policy = user[-1]
    assert policy.startswith("CREATE ROW POLICY OR REPLACE auditlog_org_bob ON db1.audit_events, db1.audit_daily_counts")
    assert policy.endswith("USING org_id = 'globex' TO bob")
    assert "s3cret" not in " ".join(user)  # only the SHA-256 travels
    assert hashlib.sha256(b"s3cret").hexdigest() in user[0]


@pytest.mark.parametrize("bad", ["a b", "x;DROP", "1abc", "", "é"])
def test_identifiers_are_validated(bad: str) -> None:
    with pytest.raises(ValueError):
        roles.analyst_user_statements("db", bad, "acme", password="pw")
    with pytest.raises(ValueError):
        roles.role_statements(bad)


def test_literals_are_escaped() -> None:
    assert roles.sql_literal("it's") == "'it\\'s'"
    assert roles.sql_literal("a\\'; DROP") == "'a\\\\\\'; DROP'"
    with pytest.raises(ValueError):
        roles.sql_literal("a\nb")


def test_every_statement_parses_with_clickhouse(store: Store) -> None:
    """ClickHouse's own parser (formatQuery) accepts every generated statement, and the org literal
    survives as one string (no injection through an odd org id)."""
    stmts = roles.role_statements(store.database) + roles.role_statements(store.database, cluster="c1")
    stmts += roles.analyst_user_statements(store.database, "alice", "o'hara \\ co", password="pw")
    stmts += roles.service_user_statements("auditlog_consumer", "writer", password="pw", cluster="c1")
    c = store.client()
    for s in stmts:
        formatted = c.query("SELECT formatQuery({q:String})", parameters={"q": s}).result_rows[0][0]
        assert formatted.split()[0] == s.split()[0]
    org_policy = next(s for s in stmts if s.startswith("CREATE ROW POLICY OR REPLACE auditlog_org_alice"))
    policy = c.query("SELECT formatQuery({q:String})", parameters={"q": org_policy}).result_rows[0][0]
    assert "USING org_id = 'o\\'hara \\\\ co'" in policy


def test_chdb_cannot_manage_access(store: Store) -> None:
    """Measured fact (see module doc): if chDB ever gains access storage, this test says so."""
    c = store.client()
    assert roles.can_manage_access(c) is False
    with pytest.raises(Exception, match=r"ACCESS_DENIED|ACCESS_STORAGE|Not enough privileges"):
        c.command("CREATE ROLE IF NOT EXISTS auditlog_probe_role")
    assert migrate(store, roles=None) == []  # auto: skipped on chDB
    with pytest.raises(RuntimeError, match="cannot create roles"):
        migrate(store, roles=True)


def test_readonly_role_setting_blocks_every_mutation(store: Store) -> None:
    """The reader/analyst setting (readonly = 2) enforced by the engine: a session with it cannot insert,
    delete, alter, truncate or drop, nor lift the setting; reads and per-query settings still work."""
    ro = clickhouse_connect.get_client(dsn=store.url, database=store.database, settings=roles.READONLY_SETTINGS)
    try:
        assert ro.query("SELECT count() FROM audit_events").result_rows == [(0,)]
        ro.query("SELECT 1", settings={"max_execution_time": 5})
        for stmt in (
            "INSERT INTO audit_events (org_id, event_id, description) VALUES ('x', generateUUIDv4(), 'x')",
            "ALTER TABLE audit_events DELETE WHERE 1",
            "DELETE FROM audit_events WHERE 1",
            "ALTER TABLE audit_events MODIFY TTL toDateTime(occurred_at) + INTERVAL 1 DAY",
            "TRUNCATE TABLE audit_events",
            "DROP TABLE audit_events",
            "SET readonly = 0",
        ):
            with pytest.raises(Exception, match=r"READONLY|readonly"):
                ro.command(stmt)
    finally:
        ro.close()
    assert store.client().query("EXISTS TABLE audit_events").result_rows == [(1,)]
