"""Versioned, idempotent, concurrency-safe ClickHouse migrations (``auditlog migrate``).

Contract: :func:`migrate` applies ``schemas/migrations/*.sql`` in order, records each once in
``schema_migrations``, is safe to run from several processes at once (claims, see the design note below),
then applies the repeatable steps (catalog labels, retention TTL, roles). :func:`run_migrate` is what the
``auditlog migrate`` command and every process that owns the store run on start-up. The SQL text itself (files,
rendering for a cluster) is :mod:`auditlogkit.server.db.migration_sql`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import socket
import threading
import time
import uuid
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from auditlogkit.schemas.catalog import Catalog, get_catalog
from auditlogkit.schemas.tables import CATALOG_TABLE, CLAIMS_TABLE, EVENTS_TABLE, MIGRATIONS_TABLE
from auditlogkit.server.db.migration_sql import (
    Migration,
    MigrationError,
    cluster_statements,
    migration_files,
    render_cluster,
    render_migration,
    replicated_engine,
    retention_tables,
    sharded_tables,
)
from auditlogkit.server.logs import get_logger
from auditlogkit.server.settings import Settings, check_ident
from auditlogkit.server.store import Store, redact_text

log = get_logger("auditlogkit.server.db.migrations")


# ----- migrations ---------------------------------------------------------------------------------------
# Design (docs/operations.md, "Migrations"; docs/architecture-notes.md): each version is claimed by exactly one
# migrator (a row deduplicated by its insert token, read back), recorded done once; a stale claim is taken over.
DEFAULT_LEASE_SECONDS = 900.0
_TTL_EXPR = re.compile(r"\bTTL\s+(.+?)\s*\+\s*toIntervalDay\((\d+)\)")


def migrate(store: Store, retention_days: int = 400, *, catalog: Catalog | None = None, roles: bool | None = None,
            target: int | None = None, cluster: str | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS,
            wait_seconds: float | None = None) -> list[str]:
    """Apply pending migrations and the repeatable steps; return the names of what changed.

    Safe to run repeatedly and from several processes or threads at once (each with its own client): every
    versioned migration is applied by exactly one of them (see the design note above). ``catalog``: the
    labels to load (default: the packaged catalog; pass ``get_catalog(settings.catalog_extra)``).
    ``roles``: create the roles of :mod:`auditlogkit.server.db.roles` (None = when the connection can manage access,
    i.e. admin credentials on a server; never on chDB; True = required, error if impossible).
    ``target``: stop after this version (tests, staged upgrades). ``cluster``: render every statement for
    that ClickHouse cluster (:mod:`auditlogkit.server.db.migration_sql`). Returns ``[]`` when nothing changed.
    """
    if retention_days < 1:
        raise ValueError("retention_days must be >= 1")
    if not _may_run_ddl(store):
        return []
    migrator = _Migrator(store, retention_days, lease_seconds, wait_seconds, cluster)
    try:
        migrator.bootstrap()
        applied = migrator.apply_versions(target)
        applied += migrator.sync_catalog(catalog)
        applied += migrator.apply_retention()
        applied += migrator.apply_roles(roles)
        return applied
    finally:
        migrator.close()


def _create_query(client: Client, database: str, table: str) -> str:
    """``table``'s CREATE statement as the server reports it ('' when the table does not exist)."""
    rows = client.query(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": table},
    ).result_rows
    return str(rows[0][0]) if rows else ""


def _current_ttl(client: Client, database: str, table: str) -> tuple[str, int] | None:
    """(time expression, days) of ``table``'s retention TTL, or None."""
    m = _TTL_EXPR.search(_create_query(client, database, table))
    return (m.group(1), int(m.group(2))) if m else None


def _may_run_ddl(store: Store) -> bool:
    """False for a least-privilege connection (the consumer's writer, the API's reader on a server).

    Such a process must not migrate: the deployment runs ``auditlog migrate`` with admin credentials first
    (deploy/compose.yaml: the one-shot ``migrate`` service). It may start if the schema exists; otherwise
    :class:`MigrationError` says what to do. chDB and admin users return True.
    """
    if store.embedded:
        return True
    c = store.admin_client()
    try:
        try:
            allowed = bool(c.query(f"CHECK GRANT CREATE TABLE ON {store.database}.*").result_rows[0][0])
        except Exception:  # a server without CHECK GRANT (< 24.5): assume an admin, as before
            return True
        if allowed:
            return True
        exists = c.query(f"EXISTS TABLE {store.database}.{EVENTS_TABLE}").result_rows[0][0]
    finally:
        c.close()
    if not exists:
        raise MigrationError(
            f"database {store.database} is not migrated and this user may not create tables: run "
            "`auditlog migrate` with admin credentials first"
        )
    log.info("migration.skipped", reason="least-privilege user; schema present", database=store.database)
    return False


class _Migrator:
    def __init__(
        self, store: Store, retention_days: int, lease_seconds: float, wait_seconds: float | None, cluster: str | None
    ) -> None:
        if cluster is not None:
            check_ident(cluster, "cluster name")
        self.cluster = cluster
        self.sharded = sharded_tables() if cluster else set()
        self.store = store
        self.db = store.database
        self.retention_days = int(retention_days)
        self.lease = float(lease_seconds)
        self.wait = float(wait_seconds) if wait_seconds is not None else self.lease + 60.0
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"
        self.c = store.admin_client()

    def close(self) -> None:
        if not self.store.embedded:
            self.c.close()

    # --- bookkeeping tables -------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Create (or upgrade) the database and the bookkeeping tables."""
        db, c = self.db, self.c
        oc = f" ON CLUSTER {self.cluster}" if self.cluster else ""

        def engine(family: str, table: str) -> str:
            return replicated_engine(family, None, f"/clickhouse/tables/all/{db}/{table}") if self.cluster else family

        c.command(f"CREATE DATABASE IF NOT EXISTS {db}{oc}")
        c.command(
            f"CREATE TABLE IF NOT EXISTS {db}.{MIGRATIONS_TABLE}{oc} "
            "(version UInt32, name String, applied_at DateTime64(3, 'UTC'), "
            "checksum String DEFAULT '', applied_by String DEFAULT '') "
            f"ENGINE = {engine('ReplacingMergeTree', MIGRATIONS_TABLE)} ORDER BY version "
            "SETTINGS non_replicated_deduplication_window = 1000"
        )
        ddl = self._create_query(MIGRATIONS_TABLE)
        if "checksum" not in ddl:  # a table made by the first foundation version: upgrade in place
            c.command(
                f"ALTER TABLE {db}.{MIGRATIONS_TABLE} ADD COLUMN IF NOT EXISTS checksum String DEFAULT '', "
                "ADD COLUMN IF NOT EXISTS applied_by String DEFAULT ''"
            )
        if "non_replicated_deduplication_window" not in ddl:
            c.command(f"ALTER TABLE {db}.{MIGRATIONS_TABLE} MODIFY SETTING non_replicated_deduplication_window = 1000")
        c.command(
            f"CREATE TABLE IF NOT EXISTS {db}.{CLAIMS_TABLE}{oc} "
            "(version UInt32, attempt UInt32, owner String, claimed_at DateTime64(3, 'UTC')) "
            f"ENGINE = {engine('MergeTree', CLAIMS_TABLE)} ORDER BY (version, attempt) "
            "SETTINGS non_replicated_deduplication_window = 10000"
        )

    def _create_query(self, table: str) -> str:
        return _create_query(self.c, self.db, table)

    def _done(self) -> dict[int, str]:
        rows = self.c.query(f"SELECT version, checksum FROM {self.db}.{MIGRATIONS_TABLE} FINAL").result_rows
        return {int(v): str(cs) for v, cs in rows}

    # --- claims ----------------------------------------------------------------------------------------
    def _insert_claim(self, version: int, attempt: int, owner: str, stale: bool = False) -> None:
        self.c.command(
            f"INSERT INTO {self.db}.{CLAIMS_TABLE} (version, attempt, owner, claimed_at) SELECT "
            "{v:UInt32}, {a:UInt32}, {o:String}, " + ("toDateTime64(0, 3, 'UTC')" if stale else "now64(3)"),
            parameters={"v": version, "a": attempt, "o": owner},
            settings={"insert_deduplication_token": f"claim:{version}:{attempt}"},
        )

    def _try_claim(self, version: int) -> bool | None:
        """True: this migrator owns ``version``; False: it is done; None: another live migrator holds it."""
        if version in self._done():
            return False
        rows = self.c.query(
            f"SELECT attempt, owner, dateDiff('millisecond', claimed_at, now64(3)) / 1000.0 "
            f"FROM {self.db}.{CLAIMS_TABLE} WHERE version = {{v:UInt32}} "
            "ORDER BY attempt DESC, claimed_at, owner LIMIT 1",
            parameters={"v": version},
        ).result_rows
        if rows:
            attempt, owner, age = int(rows[0][0]), str(rows[0][1]), float(rows[0][2])
            if owner == self.owner:
                return True
            if age < self.lease:
                return None
            log.warning("migration.claim_taken_over", version=version, previous_owner=owner, age_s=round(age, 1))
            attempt += 1
        else:
            attempt = 0
        self._insert_claim(version, attempt, self.owner)
        winner = self.c.query(
            f"SELECT owner FROM {self.db}.{CLAIMS_TABLE} WHERE version = {{v:UInt32}} AND attempt = {{a:UInt32}} "
            "ORDER BY claimed_at, owner LIMIT 1",
            parameters={"v": version, "a": attempt},
        ).result_rows
        if winner and winner[0][0] == self.owner:
            return True
        return None  # lost the race for this attempt: another live migrator holds it (not "done")

    # --- versioned migrations ------------------------------------------------------------------------
    def apply_versions(self, target: int | None) -> list[str]:
        applied: list[str] = []
        done = self._done()
        for m in migration_files():
            if target is not None and m.version > target:
                break
            if m.version in done:
                if done[m.version] and done[m.version] != m.checksum:
                    log.warning("migration.changed_after_apply", version=m.version, name=m.name)
                continue
            if self._wait_and_apply(m):
                applied.append(m.label)
        return applied

    def _wait_and_apply(self, m: Migration) -> bool:
        deadline = time.monotonic() + self.wait
        while True:
            state = self._try_claim(m.version)
            if state is False:
                return False
            if state is True:
                self._apply(m)
                return True
            if time.monotonic() > deadline:
                raise MigrationError(
                    f"migration {m.label} is being applied by another migrator and did not finish within "
                    f"{self.wait:.0f}s; see {self.db}.{CLAIMS_TABLE}"
                )
            time.sleep(0.1)

    def _apply(self, m: Migration) -> None:
        t0 = time.monotonic()
        stmts = render_migration(m.sql, self.db, self.retention_days)
        if self.cluster:
            stmts = [x for st in stmts for x in render_cluster(st, self.db, self.cluster, self.sharded)]
        for stmt in stmts:
            try:
                self.c.command(stmt)
            except Exception as exc:
                # Release the claim at once (a stale claim row) so another run can retry after a fix.
                last = self.c.query(
                    f"SELECT max(attempt) FROM {self.db}.{CLAIMS_TABLE} WHERE version = {{v:UInt32}}",
                    parameters={"v": m.version},
                ).result_rows[0][0]
                self._insert_claim(m.version, int(last) + 1, f"released-by:{self.owner}", stale=True)
                reason = redact_text(str(exc), self.store.url).splitlines()[0]
                log.error("migration.failed", version=m.version, name=m.name, error=reason)
                raise MigrationError(f"migration {m.label} failed: {reason}") from exc
        self.c.insert(
            f"{self.db}.{MIGRATIONS_TABLE}",
            [[m.version, m.name, datetime.now(UTC), m.checksum, self.owner]],
            column_names=["version", "name", "applied_at", "checksum", "applied_by"],
            settings={"insert_deduplication_token": f"done:{m.version}"},
        )
        log.info("migration.applied", version=m.version, name=m.name, ms=round((time.monotonic() - t0) * 1000))

    # --- repeatable steps ------------------------------------------------------------------------------
    def _table_exists(self, table: str) -> bool:
        return bool(self._create_query(table))

    def sync_catalog(self, catalog: Catalog | None) -> list[str]:
        """Insert the catalog labels that are missing or changed in ``catalog_actions``."""
        if not self._table_exists(CATALOG_TABLE):
            return []
        cat = catalog or get_catalog()
        want = set()
        for scope, category, action in cat.all_actions():
            labels = cat.labels(scope, action)
            assert labels is not None
            want.add((scope, action, category, *labels))
        have = {
            tuple(str(x) for x in r)
            for r in self.c.query(
                f"SELECT scope, action, category, scope_label, category_label, action_label "
                f"FROM {self.db}.{CATALOG_TABLE} FINAL"
            ).result_rows
        }
        missing = sorted(want - have)
        if not missing:
            return []
        # Token over (current state, wanted rows): a concurrent migrator with the same view inserts nothing.
        token = hashlib.sha256(repr((sorted(have), missing)).encode()).hexdigest()
        now = datetime.now(UTC)
        self.c.insert(
            f"{self.db}.{CATALOG_TABLE}",
            [[*row, now] for row in missing],
            column_names=["scope", "action", "category", "scope_label", "category_label", "action_label", "loaded_at"],
            settings={"insert_deduplication_token": f"catalog:{token}"},
        )
        log.info("migration.catalog_synced", rows=len(missing))
        return [f"catalog:{len(missing)}_labels"]

    def apply_retention(self) -> list[str]:
        """``ALTER TABLE ... MODIFY TTL`` on each retention table whose TTL differs from the setting."""
        changed = []
        oc = f" ON CLUSTER {self.cluster}" if self.cluster else ""
        for name in retention_tables():
            table = f"{name}_local" if name in self.sharded else name
            current = _current_ttl(self.c, self.db, table)
            if current is None or current[1] == self.retention_days:
                continue
            expr, days = current
            self.c.command(
                f"ALTER TABLE {self.db}.{table}{oc} MODIFY TTL {expr} + INTERVAL {self.retention_days} DAY DELETE"
            )
            log.info("migration.retention_changed", table=table, from_days=days, to_days=self.retention_days)
            changed.append(f"ttl:{name}={self.retention_days}d")
        return changed

    def apply_roles(self, roles: bool | None) -> list[str]:
        from auditlogkit.server.db import roles as access

        if roles is False:
            return []
        capable = access.can_manage_access(self.c)
        if not capable:
            if roles:
                raise MigrationError(
                    "cannot create roles: this connection cannot manage access (chDB has no writable access "
                    "storage; on a server use a user with access_management / CREATE ROLE)"
                )
            return []
        before = self.c.query(
            "SELECT count() FROM system.roles WHERE name IN {names:Array(String)}",
            parameters={"names": list(access.ROLES)},
        ).result_rows[0][0]
        for stmt in access.role_statements(self.db, local_suffix_for=sorted(self.sharded)):
            self.c.command(stmt)
        return [] if before == len(access.ROLES) else ["access:roles"]


def ttl_days(store: Store, table: str = EVENTS_TABLE) -> int | None:
    """The retention (days) currently in ``table``'s TTL, read from the server (None: no TTL)."""
    current = _current_ttl(store.client(), store.database, table)
    return current[1] if current else None


def run_migrate(settings: Settings, *, cluster: str | None = None, roles: bool | None = None) -> list[str]:
    """What ``auditlog migrate`` runs: :func:`migrate` with the settings' retention and catalog (including
    the operator's extra file), roles when the credentials allow it, optionally rendered for a cluster."""
    store = Store.from_settings(settings)
    try:
        return migrate(
            store, settings.retention_days, catalog=get_catalog(settings.catalog_extra), roles=roles, cluster=cluster
        )
    finally:
        store.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``auditlog migrate``."""
    p.add_argument("--data", default=None, help="data directory of the embedded store [AUDITLOG_DATA_DIR]")
    p.add_argument("--cluster", default=None, help="render every migration ON CLUSTER for this cluster")
    p.add_argument("--roles", dest="roles", action="store_true", default=None, help="require creating the roles")
    p.add_argument("--no-roles", dest="roles", action="store_false", help="never create roles")
    p.add_argument("--print", action="store_true", help="print the (cluster) SQL instead of applying it")


def run_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``auditlog migrate``: apply (or ``--print``) the migrations for ``settings``."""
    if args.print:
        stmts = (
            cluster_statements(settings.clickhouse_database, args.cluster, settings.retention_days)
            if args.cluster
            else [
                s
                for m in migration_files()
                for s in render_migration(m.sql, settings.clickhouse_database, settings.retention_days)
            ]
        )
        print(";\n\n".join(stmts) + ";")
        return 0
    applied = run_migrate(settings, cluster=args.cluster, roles=args.roles)
    print(f"migrations applied: {', '.join(applied) if applied else 'none (schema is current)'}")
    return 0
