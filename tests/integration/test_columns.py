"""The column spec (schemas/columns.py) against a real store, and adding a column the way docs/architecture.md
says ("Add a column") after events were stored with digests: ``auditlog verify`` stays clean, because the
content hash's column list is written out per version (auditlog/db/content_hash.py), not derived from the spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog

from auditlogkit.schemas.columns import COLUMNS
from auditlogkit.schemas.tables import DIGESTS_TABLE, EVENTS_TABLE
from auditlogkit.server.app.cli import main
from auditlogkit.server.db import integrity
from auditlogkit.server.store import Store
from tests.integration.test_api_helpers import store_events
from tests.unit.test_columns import FIXED, FIXED_V1

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _reset_logging() -> Any:
    yield
    structlog.reset_defaults()  # `auditlog verify` binds logging to this test's (then closed) stderr


def table_columns(store: Store, table: str = EVENTS_TABLE) -> dict[str, str]:
    return dict(store.client().query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String}",
        parameters={"db": store.database, "t": table}).result_rows)


def test_a_migrated_store_has_the_spec_columns(store: Store) -> None:
    """Every migration applied to a fresh store: audit_events has exactly the spec's columns, with its types."""
    assert table_columns(store) == {c.name: c.ch_type for c in COLUMNS}


def test_the_store_records_digests_with_the_written_out_v1(store: Store) -> None:
    """The view the migration created computes version 1, and the digest it records for a fixed event is the
    one the code computed before the column spec existed."""
    assert integrity.recorded_hash(store) is integrity.CONTENT_HASHES[1]
    store_events(store, [FIXED])
    (h,), = store.client().query(f"SELECT lower(hex(content_sha256)) FROM {DIGESTS_TABLE}").result_rows
    assert h == FIXED_V1
    assert integrity.verify(store, recheck_seconds=0).counts["verified"] == 1


def test_a_digest_view_of_an_unknown_version_is_refused(store: Store, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AUDITLOG_CLICKHOUSE_URL", store.url)
    monkeypatch.setenv("AUDITLOG_CLICKHOUSE_DATABASE", store.database)
    db, c = store.database, store.client()
    c.command(f"DROP VIEW {db}.{DIGESTS_TABLE}_mv")
    assert integrity.recorded_hash(store) is integrity.CONTENT_HASHES[integrity.CONTENT_VERSION]
    c.command(f"CREATE MATERIALIZED VIEW {db}.{DIGESTS_TABLE}_mv TO {db}.{DIGESTS_TABLE} AS SELECT org_id, event_id, "
              "occurred_at, SHA256(concat('auditlog-content-v9', org_id)) AS content_sha256, kafka_topic, "
              f"kafka_partition, kafka_offset FROM {db}.{EVENTS_TABLE}")
    with pytest.raises(integrity.UnknownHashVersion):
        integrity.verify(store, recheck_seconds=0)
    assert main(["verify"]) == 2
    assert "computes a content hash of none of the versions [1]" in capsys.readouterr().err


# ----- adding a column -----------------------------------------------------------------------------------------
# Two processes on one chDB directory: "before" is the code as shipped (migrate, store events: digests recorded);
# "after" is the code with the new column in the spec (set before anything imports it, as if written in
# schemas/columns.py): it applies the column's migration, stores more events (their rows carry the column) and
# runs `auditlog verify`.
SCRIPT = r'''
import json, os, sys
from datetime import UTC, datetime

phase, url, db = sys.argv[1:4]
if phase == "after":  # the recipe: the column joins the spec (an event column: before the provenance block)
    import auditlogkit.schemas.columns as spec
    extra = spec.Column("extra", "String", "request_id", "text")  # from the event; not public; in no hash version
    at = next(i for i, c in enumerate(spec.COLUMNS) if c.provenance)
    spec.COLUMNS = (*spec.COLUMNS[:at], extra, *spec.COLUMNS[at:])
    spec.BY_NAME = {c.name: c for c in spec.COLUMNS}

from auditlogkit.server.app.cli import main
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.store import Store
from auditlogkit.schemas.columns import COLUMNS
from auditlogkit.schemas.event import parse_event
from auditlogkit.schemas.rows import EVENT_COLUMNS, EVENTS_TABLE, event_row
from tests.factories import random_events

store = Store(url, db)
if phase == "before":
    migrate(store)
c = store.client()
if phase == "after":  # the column's migration
    c.command(f"ALTER TABLE {db}.{EVENTS_TABLE} ADD COLUMN IF NOT EXISTS extra String DEFAULT ''")
types = dict(c.query("SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String}",
                     parameters={"db": db, "t": EVENTS_TABLE}).result_rows)
now = datetime.now(UTC)
part = 0 if phase == "before" else 1
rows = [event_row(parse_event(e), now, "t", part, i) for i, e in enumerate(random_events(60, seed=21 + part))]
c.insert(EVENTS_TABLE, rows, column_names=list(EVENT_COLUMNS))
extra = c.query(f"SELECT countIf(extra != '') FROM {EVENTS_TABLE}").result_rows[0][0] if "extra" in types else None
os.environ.update(AUDITLOG_CLICKHOUSE_URL=url, AUDITLOG_CLICKHOUSE_DATABASE=db, AUDITLOG_INTEGRITY_RECHECK_SECONDS="1")
rc = main(["verify"])
print(json.dumps({"rc": rc, "spec_is_table": types == {c.name: c.ch_type for c in COLUMNS}, "extra": extra}))
'''


def run_phase(script: Path, phase: str, url: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, str(script), phase, url, "added"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    *out, last = p.stdout.strip().splitlines()
    return {**json.loads(last), "stdout": "\n".join(out)}


def test_adding_a_column_keeps_verify_clean(tmp_path: Path) -> None:
    script = tmp_path / "phase.py"
    script.write_text(SCRIPT, encoding="utf-8")
    url = f"chdb://{tmp_path / 'chdb'}"
    before = run_phase(script, "before", url)
    assert before["rc"] == 0 and before["spec_is_table"], before
    assert "verified 60, altered 0" in before["stdout"]
    after = run_phase(script, "after", url)
    # the store has the spec's columns, the new rows carry the column, and neither the 60 events recorded before
    # nor the 60 recorded after the column came look altered
    assert after["spec_is_table"] and after["extra"] > 0, after
    assert "verified 120, altered 0, deleted 0, unrecorded 0, conflicting 0" in after["stdout"], after["stdout"]
    assert after["rc"] == 0
