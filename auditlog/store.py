"""ClickHouse access through clickhouse-connect only: one client API for a server and for embedded chDB.

Contract:
- :class:`Store` hands out one client **per thread** (:meth:`Store.client`). chDB is not safe when threads
  share a connection (measured: wrong parameter values across threads and deadlocks), and a server client
  is not thread-safe for concurrent queries either. Never pass a client to another thread.
- All values reach SQL as server-side bound parameters (``{name:Type}``) or through ``insert``; identifiers
  (the database name) come only from validated settings.
- :func:`migrate` applies ``schemas/migrations/*.sql`` in order, idempotently, recording each in
  ``schema_migrations``; it runs on start-up of every process that owns the store.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from auditlog.logs import get_logger
from auditlog.settings import Settings

log = get_logger("auditlog.store")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def connect(url: str, database: str | None = None, **kwargs: Any) -> Client:
    """A new clickhouse-connect client for ``chdb:///dir`` or ``http(s)://user:pw@host:port``."""
    if database is not None and not _IDENT.match(database):
        raise ValueError(f"invalid database name {database!r}")
    if url.startswith("chdb://"):
        return clickhouse_connect.get_client(dsn=url, database=database or "", **kwargs)
    return clickhouse_connect.get_client(dsn=url, database=database or "", **kwargs)


class Store:
    """Per-thread clients for one ClickHouse (server or chDB path) and database."""

    def __init__(self, url: str, database: str = "auditlog") -> None:
        if not _IDENT.match(database):
            raise ValueError(f"invalid database name {database!r}")
        self.url = url
        self.database = database
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Client] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(settings.store_url, settings.clickhouse_database)

    @property
    def embedded(self) -> bool:
        return self.url.startswith("chdb://")

    def client(self) -> Client:
        """This thread's client (created on first use)."""
        c: Client | None = getattr(self._local, "client", None)
        if c is None:
            c = connect(self.url, self.database)
            self._local.client = c
            with self._lock:
                self._clients.append(c)
        return c

    def admin_client(self) -> Client:
        """A client without a default database (to create it)."""
        return connect(self.url, None)

    def ping(self) -> bool:
        try:
            return bool(self.client().query("SELECT 1").result_rows)
        except Exception:
            return False

    def close(self) -> None:
        with self._lock:
            for c in self._clients:
                with suppress(Exception):
                    c.close()
            self._clients.clear()
        self._local = threading.local()

    @contextmanager
    def session(self) -> Iterator[Client]:
        yield self.client()


# ----- migrations ---------------------------------------------------------------------------------------
def _migration_files() -> list[tuple[int, str, str]]:
    out = []
    for f in resources.files("schemas").joinpath("migrations").iterdir():
        m = re.match(r"^(\d{4})_([a-z0-9_]+)\.sql$", f.name)
        if m:
            out.append((int(m.group(1)), m.group(2), f.read_text(encoding="utf-8")))
    return sorted(out)


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


def render_migration(sql: str, database: str, retention_days: int) -> list[str]:
    """The statements of one migration file with ``{db}`` and ``{ttl_days}`` filled in."""
    if not _IDENT.match(database):
        raise ValueError(f"invalid database name {database!r}")
    return [
        s.replace("{db}", database).replace("{ttl_days}", str(int(retention_days))) for s in _statements(sql)
    ]


def migrate(store: Store, retention_days: int = 400) -> list[str]:
    """Apply pending migrations; return the names applied. Safe to run repeatedly."""
    admin = store.admin_client()
    try:
        admin.command(f"CREATE DATABASE IF NOT EXISTS {store.database}")
        admin.command(
            f"CREATE TABLE IF NOT EXISTS {store.database}.schema_migrations "
            "(version UInt32, name String, applied_at DateTime64(3, 'UTC')) "
            "ENGINE = ReplacingMergeTree ORDER BY version"
        )
        done = {
            r[0] for r in admin.query(f"SELECT version FROM {store.database}.schema_migrations FINAL").result_rows
        }
        applied = []
        for version, name, sql in _migration_files():
            if version in done:
                continue
            for stmt in render_migration(sql, store.database, retention_days):
                admin.command(stmt)
            admin.insert(
                f"{store.database}.schema_migrations",
                [[version, name, datetime.now(UTC)]],
                column_names=["version", "name", "applied_at"],
            )
            applied.append(f"{version:04d}_{name}")
            log.info("migration.applied", version=version, name=name)
        return applied
    finally:
        if not store.embedded:
            admin.close()
