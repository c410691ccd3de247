"""What the migrations say, as SQL text: the files under ``schemas/migrations``, rendered for one node or a cluster.

Contract: :func:`migration_files` lists ``NNNN_name.sql`` in version order (versions unique);
:func:`render_migration` fills in ``{db}``, ``{ttl_days}`` and ``{content_sha256}``; :func:`render_cluster` /
:func:`cluster_statements` turn single-node statements into the cluster's (``ON CLUSTER``, sharded tables as
``<name>_local`` + Distributed). Pure text: nothing here touches a store (applying is :mod:`auditlogkit.server.db.migrations`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from auditlogkit.server.settings import check_ident


class MigrationError(RuntimeError):
    """A migration failed, or waiting for another migrator's claim timed out."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def migration_files() -> list[Migration]:
    """Every ``schemas/migrations/NNNN_name.sql``, ordered by version (versions must be unique)."""
    out = []
    for f in resources.files("auditlogkit.schemas").joinpath("migrations").iterdir():
        m = re.match(r"^(\d{4})_([a-z0-9_]+)\.sql$", f.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), f.read_text(encoding="utf-8")))
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"two migration files share a version: {versions}")
    return out


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


def render_migration(sql: str, database: str, retention_days: int) -> list[str]:
    """The statements of one migration file with ``{db}``, ``{ttl_days}``, ``{content_sha256}`` (the content
    hash expression of :mod:`auditlogkit.server.db.content_hash`) and ``{content_columns}`` (its columns) filled in."""
    from auditlogkit.server.db.content_hash import CONTENT_COLUMNS, CONTENT_SHA256_SQL

    check_ident(database, "database name")
    return [
        s.replace("{db}", database).replace("{ttl_days}", str(int(retention_days))).replace(
            "{content_sha256}", CONTENT_SHA256_SQL).replace("{content_columns}", ", ".join(CONTENT_COLUMNS))
        for s in _statements(sql)
    ]


def retention_tables() -> list[str]:
    """Tables whose TTL is the retention period: those a migration creates with ``{ttl_days}`` in its TTL."""
    out: list[str] = []
    for m in migration_files():
        for stmt in _statements(m.sql):
            hit = re.match(r"^CREATE TABLE(?: IF NOT EXISTS)? \{db\}\.(\w+)", stmt)
            if hit and "{ttl_days}" in stmt and hit.group(1) not in out:
                out.append(hit.group(1))
    return out


# ----- cluster rendering ----------------------------------------------------------------------------------
# The same migration files serve a ClickHouse cluster (deploy/cluster/: Keeper, 2 shards x 2 replicas) when
# ``migrate(..., cluster="name")`` is used: every statement gets ``ON CLUSTER``; a table with an ``org_id``
# column becomes ``<name>_local`` (Replicated*MergeTree, one replication group per shard) plus ``<name>``
# as a Distributed table sharded by cityHash64(org_id) (all of an org's rows, and every copy of an event_id,
# live on one shard, so FINAL per shard is exact); a table without ``org_id`` (catalog, offsets,
# bookkeeping) is replicated to every node under its own name. Materialized views read and write the local
# tables; plain views and backfills use the Distributed names.
SHARD_KEY = "cityHash64(org_id)"
_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\.(\w+)\s*\((.*)\)\s*ENGINE\s*=\s*(\w*MergeTree)(?:\(([^)]*)\))?(.*)$", re.S)


def sharded_tables() -> set[str]:
    """Tables the migrations create with an ``org_id`` column (sharded on a cluster)."""
    out = set()
    for m in migration_files():
        for stmt in _statements(m.sql):
            hit = _CREATE_TABLE.match(stmt.replace("{db}", "db"))
            if hit and re.search(r"^\s*org_id\s", hit.group(3), re.M):
                out.add(hit.group(2))
    return out


def replicated_engine(family: str, args: str | None, path: str) -> str:
    extra = f", {args}" if args and args.strip() else ""
    return f"Replicated{family}('{path}', '{{replica}}'{extra})"


def render_cluster(stmt: str, database: str, cluster: str, sharded: set[str]) -> list[str]:
    """One rendered single-node statement as the statements for ``cluster`` (see the note above)."""
    check_ident(cluster, "cluster name")
    db, oc = database, f" ON CLUSTER {cluster}"

    def local(name: str) -> str:
        return f"{name}_local" if name in sharded else name

    hit = _CREATE_TABLE.match(stmt)
    if hit:
        _, name, cols, family, args, rest = hit.groups()
        if name in sharded:
            path = f"/clickhouse/tables/{{shard}}/{db}/{name}_local"
            return [
                f"CREATE TABLE IF NOT EXISTS {db}.{name}_local{oc} ({cols}) "
                f"ENGINE = {replicated_engine(family, args, path)}{rest}",
                f"CREATE TABLE IF NOT EXISTS {db}.{name}{oc} AS {db}.{name}_local "
                f"ENGINE = Distributed({cluster}, {db}, {name}_local, {SHARD_KEY})",
            ]
        path = f"/clickhouse/tables/all/{db}/{name}"
        return [f"CREATE TABLE IF NOT EXISTS {db}.{name}{oc} ({cols}) ENGINE = {replicated_engine(family, args, path)}{rest}"]
    mv = re.match(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)\.(\w+)\s+TO (\w+)\.(\w+)(.*)$", stmt, re.S)
    if mv:
        _, name, _, target, rest = mv.groups()
        rest = re.sub(rf"\bFROM {db}\.(\w+)", lambda m: f"FROM {db}.{local(m.group(1))}", rest)
        return [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{name}{oc} TO {db}.{local(target)}{rest}"]
    view = re.match(r"^(CREATE OR REPLACE VIEW|CREATE VIEW IF NOT EXISTS) (\w+)\.(\w+)(.*)$", stmt, re.S)
    if view:
        return [f"{view.group(1)} {db}.{view.group(3)}{oc}{view.group(4)}"]
    alter = re.match(r"^ALTER TABLE (\w+)\.(\w+)(.*)$", stmt, re.S)
    if alter:
        name, rest = alter.group(2), alter.group(3)
        out = [f"ALTER TABLE {db}.{local(name)}{oc}{rest}"]
        if name in sharded and rest.lstrip().startswith("ADD COLUMN"):  # the Distributed table reads it by name
            out.append(f"ALTER TABLE {db}.{name}{oc}{rest}")
        return out
    if stmt.startswith(("INSERT INTO", "DROP ")):
        return [stmt if stmt.startswith("INSERT") else re.sub(r"^(DROP \w+ IF EXISTS \w+\.\w+)", rf"\1{oc}", stmt)]
    raise MigrationError(f"no cluster rendering for statement: {stmt[:80]}")


def cluster_statements(database: str, cluster: str, retention_days: int = 400) -> list[str]:
    """Every migration rendered for ``cluster``, in order (for review: ``python -m auditlogkit.server.db.migrations``)."""
    sharded = sharded_tables()
    out = [f"CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {cluster}"]
    for m in migration_files():
        for stmt in render_migration(m.sql, database, retention_days):
            out += render_cluster(stmt, database, cluster, sharded)
    return out
