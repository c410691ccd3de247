"""Migrations on the real chDB engine: idempotent, and the table has the designed layout."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from auditlogkit.schemas.rows import EVENT_COLUMNS
from auditlogkit.server.app.cli_migrate import _settings
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.store import Store


def test_migrate_is_idempotent(store: Store) -> None:
    assert migrate(store) == []
    names = [r[0] for r in store.client().query("SELECT name FROM schema_migrations FINAL").result_rows]
    assert len(names) == len(set(names)) >= 1


def test_events_table_layout(store: Store) -> None:
    c = store.client()
    cols = [r[0] for r in c.query("SELECT name FROM system.columns WHERE database = {db:String} AND table = 'audit_events' ORDER BY position",
                                  parameters={"db": store.database}).result_rows]
    assert tuple(cols[: len(EVENT_COLUMNS)]) == EVENT_COLUMNS
    (key, part) = c.query("SELECT sorting_key, partition_key FROM system.tables WHERE database = {db:String} AND name = 'audit_events'",
                          parameters={"db": store.database}).result_rows[0]
    assert key.startswith("org_id, occurred_at")
    assert "toYYYYMM(occurred_at)" in part


def test_migrate_data_option_is_an_absolute_store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``auditlog migrate --data rel`` must point the store at <cwd>/rel/chdb, not at a URL host named 'rel'."""
    monkeypatch.chdir(tmp_path)
    s = _settings(argparse.Namespace(data="rel"))
    assert s.data_dir == tmp_path.resolve() / "rel"
    assert s.store_url == f"chdb://{(tmp_path.resolve() / 'rel' / 'chdb').as_posix()}"
