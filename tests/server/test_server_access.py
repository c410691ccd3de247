"""Least privilege on a real ClickHouse server (testcontainers; skipped without Docker).

`auditlog migrate` with admin credentials creates the roles; service and analyst users come from
auditlogkit.server.db.roles. Checked: the writer inserts events but cannot read them, read other tables, delete, alter
or truncate; the reader (API) reads but cannot mutate; an analyst sees only its org, through the table, the
flat view and the daily counts; an analyst user without an org sees nothing; migrate is idempotent with
roles and skips cleanly for least-privilege users.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import clickhouse_connect
import pytest

from auditlogkit.query_api.streams.keys import SecretBox
from auditlogkit.query_api.streams.ssrf import AllowList
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.event import parse_event
from auditlogkit.schemas.rows import EVENT_COLUMNS, EVENTS_TABLE, event_row
from auditlogkit.server.db import roles
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.server.conftest import user_url

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def env(clickhouse_server: dict[str, Any]) -> dict[str, Any]:
    db = f"al_{uuid.uuid4().hex[:8]}"
    admin = Store(clickhouse_server["admin_url"], db)
    applied = migrate(admin)
    assert "access:roles" in applied or migrate(admin) == []
    c = admin.admin_client()
    pw = {"w": uuid.uuid4().hex, "r": uuid.uuid4().hex, "a": uuid.uuid4().hex, "n": uuid.uuid4().hex,
          "s": uuid.uuid4().hex}
    stmts = (roles.service_user_statements(f"w_{db}", "writer", password=pw["w"])
             + roles.service_user_statements(f"s_{db}", "streams", password=pw["s"])
             + roles.service_user_statements(f"r_{db}", "reader", password=pw["r"])
             + roles.analyst_user_statements(db, f"a_{db}", "acme", password=pw["a"]))
    # an analyst-role user that was never given an org policy: must see nothing
    stmts += [f"CREATE USER IF NOT EXISTS n_{db} IDENTIFIED WITH sha256_password BY '{pw['n']}'",
              f"GRANT {roles.ANALYST} TO n_{db}", f"ALTER USER n_{db} DEFAULT ROLE {roles.ANALYST}"]
    for s in stmts:
        c.command(s)
    cat = get_catalog()
    rows = [event_row(parse_event(make_event(org_id=org), cat), datetime.now(UTC), "t", 0, i)
            for i, org in enumerate(["acme", "acme", "globex"])]
    admin.client().insert(EVENTS_TABLE, rows, column_names=list(EVENT_COLUMNS))

    def client(kind: str) -> Any:
        name = {"w": f"w_{db}", "r": f"r_{db}", "a": f"a_{db}", "n": f"n_{db}", "s": f"s_{db}"}[kind]
        return clickhouse_connect.get_client(dsn=user_url(clickhouse_server, name, pw[kind]), database=db)

    return {"db": db, "admin": admin, "client": client, "server": clickhouse_server, "pw": pw}


def test_writer_inserts_events_only(env: dict[str, Any]) -> None:
    w = env["client"]("w")
    cat = get_catalog()
    row = event_row(parse_event(make_event(org_id="acme"), cat), datetime.now(UTC), "t", 1, 0)
    w.insert(EVENTS_TABLE, [row], column_names=list(EVENT_COLUMNS))  # allowed (and feeds the MVs as definer)
    assert w.query(f"SELECT count() FROM {roles.WRITER_READABLE[0]}").result_rows  # its watermarks: allowed
    for stmt in (f"SELECT count() FROM {EVENTS_TABLE}", "SELECT count() FROM schema_migrations",
                 "SELECT count() FROM audit_events_flat", f"ALTER TABLE {EVENTS_TABLE} DELETE WHERE 1",
                 f"DELETE FROM {EVENTS_TABLE} WHERE 1", f"TRUNCATE TABLE {EVENTS_TABLE}",
                 f"ALTER TABLE {EVENTS_TABLE} MODIFY TTL toDateTime(occurred_at) + INTERVAL 1 DAY",
                 f"DROP TABLE {EVENTS_TABLE}", "INSERT INTO catalog_actions (scope) VALUES ('x')"):
        with pytest.raises(Exception, match=r"ACCESS_DENIED|Not enough privileges"):
            w.query(stmt) if stmt.startswith("SELECT") else w.command(stmt)


def test_streams_user_runs_streams_but_cannot_touch_events(env: dict[str, Any]) -> None:
    """As auditlog_streams: the API's stream configuration (create, list) and the deliverer's work (read every org's
    events, save a position, claim a lease) succeed; writing or altering the events is refused."""
    import os

    from auditlogkit.query_api.streams.store import StreamStore

    server = env["server"]
    store = Store(user_url(server, f"s_{env['db']}", env["pw"]["s"]), env["db"])
    repo = StreamStore(store, SecretBox(os.urandom(32)), get_catalog(), topic="t", retention_days=30,
                       allow=AllowList.parse("127.0.0.1"), lease_seconds=5.0)
    created = repo.create("acme", "siem", {"type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "x" * 24})
    assert [x.id for x in repo.list("acme")] == [created.id]
    assert repo.leases.try_lease(created.id, "holder-1") is not None
    s = store.client()
    assert s.query(f"SELECT count() FROM {EVENTS_TABLE}").result_rows[0][0] == 3  # every org: it delivers all
    row = event_row(parse_event(make_event(org_id="acme"), get_catalog()), datetime.now(UTC), "t", 9, 0)
    with pytest.raises(Exception, match=r"ACCESS_DENIED|Not enough privileges"):
        s.insert(EVENTS_TABLE, [row], column_names=list(EVENT_COLUMNS))
    for stmt in (f"ALTER TABLE {EVENTS_TABLE} DELETE WHERE 1", "TRUNCATE TABLE audit_streams",
                 "ALTER TABLE audit_streams DELETE WHERE 1", "INSERT INTO catalog_actions (scope) VALUES ('x')"):
        with pytest.raises(Exception, match=r"ACCESS_DENIED|Not enough privileges"):
            s.command(stmt)


def test_reader_reads_but_cannot_mutate(env: dict[str, Any]) -> None:
    r = env["client"]("r")
    assert r.query(f"SELECT count() FROM {EVENTS_TABLE} FINAL").result_rows[0][0] >= 3  # all orgs: API scopes
    for stmt in (f"ALTER TABLE {EVENTS_TABLE} DELETE WHERE 1", f"DELETE FROM {EVENTS_TABLE} WHERE 1",
                 f"TRUNCATE TABLE {EVENTS_TABLE}", f"DROP TABLE {EVENTS_TABLE}",
                 f"INSERT INTO {EVENTS_TABLE} (org_id) VALUES ('x')", "SET readonly = 0"):
        with pytest.raises(Exception, match=r"ACCESS_DENIED|Not enough privileges|READONLY|readonly"):
            r.command(stmt)


def test_analyst_sees_only_its_org(env: dict[str, Any]) -> None:
    a = env["client"]("a")
    for table in (EVENTS_TABLE, "audit_events_flat", "audit_daily_counts"):
        orgs = {o for (o,) in a.query(f"SELECT DISTINCT org_id FROM {table}").result_rows}
        assert orgs == {"acme"}, table
    assert a.query("SELECT count() FROM audit_events_flat WHERE org_id = 'globex'").result_rows == [(0,)]
    with pytest.raises(Exception, match=r"ACCESS_DENIED|Not enough privileges"):
        a.query("SELECT count() FROM schema_migrations")
    with pytest.raises(Exception, match=r"ACCESS_DENIED|Not enough privileges|READONLY|readonly"):
        a.command(f"ALTER TABLE {EVENTS_TABLE} DELETE WHERE 1")


def test_analyst_without_org_sees_nothing(env: dict[str, Any]) -> None:
    n = env["client"]("n")
    assert n.query(f"SELECT count() FROM {EVENTS_TABLE}").result_rows == [(0,)]


def test_migrate_twice_with_roles_and_as_least_privilege_user(env: dict[str, Any]) -> None:
    assert migrate(env["admin"]) == []
    writer = Store(user_url(env["server"], f"w_{env['db']}", env["pw"]["w"]), env["db"])
    assert migrate(writer) == []  # skipped: least-privilege user, schema present


def test_reader_queries_carry_limits_and_can_be_killed_by_their_tag(env: dict[str, Any]) -> None:
    """The API's role may set its query limits and log_comment and kill its own tagged query (query_runner)."""
    import threading
    import time

    from auditlogkit.query_api.core.query_runner import QueryRunner, kill_tagged
    from auditlogkit.server.settings import Settings

    pw = env["pw"]["r"]
    url = user_url(env["server"], f"r_{env['db']}", pw)
    reader = Store(url, env["db"])
    runner = QueryRunner(reader, Settings(api_query_timeout_seconds=0.5))
    slow = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) % 7 = 1"
    with pytest.raises(Exception, match=r"TIMEOUT_EXCEEDED|Timeout exceeded"):
        runner._call("t-limit", {"max_execution_time": "0.5"}, lambda: reader.client().query(slow), ())
    failed: list[BaseException] = []

    def run() -> None:
        try:
            runner._call("t-kill", {"max_execution_time": "120"}, lambda: reader.client().query(slow), ())
        except BaseException as exc:
            failed.append(exc)

    t = threading.Thread(target=run)
    t0 = time.monotonic()
    t.start()
    time.sleep(1.0)
    kill_tagged(Store(url, env["db"]), "t-kill")
    t.join(30)
    assert not t.is_alive() and time.monotonic() - t0 < 10
    assert failed and "cancel" in str(failed[0]).lower(), failed
    runner.close()
