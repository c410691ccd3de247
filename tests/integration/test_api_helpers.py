"""Shared helpers of the API tests (no tests here): storing events, an app client, tokens."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from auditlogkit.query_api.core.app import create_app
from auditlogkit.query_api.security.auth import mint_token
from auditlogkit.schemas.event import parse_event
from auditlogkit.schemas.rows import EVENT_COLUMNS, EVENTS_TABLE, event_row
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store

_offsets = itertools.count()


def insert_rows(store: Store, rows: list[tuple[Any, ...]]) -> None:
    """Insert :func:`~auditlogkit.schemas.rows.event_row` rows, leaving out the columns a store migrated to an earlier
    version does not have yet."""
    have = {r[0] for r in store.client().query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}",
        parameters={"db": store.database, "t": EVENTS_TABLE}).result_rows}
    keep = [i for i, c in enumerate(EVENT_COLUMNS) if c in have]
    if len(keep) < len(EVENT_COLUMNS):
        rows = [tuple(r[i] for i in keep) for r in rows]
    store.client().insert(EVENTS_TABLE, rows, column_names=[EVENT_COLUMNS[i] for i in keep])


def store_events(store: Store, events: Iterable[dict[str, Any]]) -> int:
    """Validate and insert events straight into ClickHouse (for tests that are not about the pipeline)."""
    now = datetime.now(UTC)
    rows = [event_row(parse_event(e), now, "direct", 0, next(_offsets)) for e in events]
    if rows:
        insert_rows(store, rows)
    return len(rows)


def token(settings: Settings, *, org: str = "acme", role: str = "org_owner", workspaces: list[str] | None = None,
          permissions: tuple[str, ...] = ("audit:read", "audit:export"), sub: str = "u-test",
          email: str = "tester@acme.example", ttl: int = 3600) -> str:
    assert settings.jwt_secret
    return mint_token(settings.jwt_secret, sub=sub, email=email, org_id=org, role=role, workspaces=workspaces,
                      permissions=list(permissions), ttl_seconds=ttl)


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


@contextmanager
def app_client(settings: Settings, store: Store, **kwargs: Any) -> Iterator[TestClient]:
    """A TestClient of the real app on ``store`` (server errors answered as 500, not raised)."""
    with TestClient(create_app(settings, store, **kwargs), raise_server_exceptions=False) as c:
        yield c
