"""Least-privilege ClickHouse access for auditlog: the one place that generates roles, grants, row policies
and users as SQL.

Contract:
- ``auditlog_writer`` (the consumer) may only INSERT events and conflicts and read :data:`WRITER_READABLE`;
- ``auditlog_streams`` (``auditlog stream``, and the API's writes of stream configuration) may only INSERT into
  :data:`STREAMS_WRITABLE` and read :data:`STREAMS_READABLE`; it never writes events;
  ``auditlog_reader`` (the API) and ``auditlog_analyst`` are ``readonly = 2`` CONST; analysts see only their
  org's rows of :data:`ORG_SCOPED_TABLES` (a fail-closed ``USING 0`` policy plus one permissive policy per user);
- no statement grants any of :data:`FORBIDDEN_PRIVILEGES`; nothing may write :data:`APPEND_ONLY_TABLES`;
- every identifier passes :func:`auditlogkit.server.settings.check_ident` and every literal :func:`sql_literal`
  (access-control DDL cannot take bound parameters);
- the statements need a ClickHouse server (chDB has no writable access storage).

Command line (prints SQL; ``--apply`` runs it on ``AUDITLOG_CLICKHOUSE_URL`` with those credentials)::

    python -m auditlogkit.server.db.roles roles
    python -m auditlogkit.server.db.roles analyst --user alice --org acme --password-sha256 <hex>
    python -m auditlogkit.server.db.roles service --user auditlog_consumer --role writer --password-env CONSUMER_PW --apply
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from auditlogkit.schemas.tables import (
    CATALOG_TABLE,
    CONFLICTS_TABLE,
    DAILY_COUNTS,
    DIGESTS_TABLE,
    EVENTS_TABLE,
    FLAT_VIEW,
    OFFSETS_TABLE,
    STREAM_LEASES_TABLE,
    STREAM_POSITIONS_TABLE,
    STREAMS_TABLE,
)
from auditlogkit.server.settings import check_ident

WRITER = "auditlog_writer"
READER = "auditlog_reader"
ANALYST = "auditlog_analyst"
STREAMS = "auditlog_streams"
ROLES: tuple[str, ...] = (WRITER, READER, ANALYST, STREAMS)
ROLE_ALIASES = {"writer": WRITER, "reader": READER, "analyst": ANALYST, "streams": STREAMS}
#: Roles a service user may hold (analysts get theirs through :func:`analyst_user_statements`).
SERVICE_ROLES: tuple[str, ...] = (WRITER, READER, STREAMS)

#: Tables the consumer may read besides inserting events: its per-partition offset watermarks
#: (consumer migration 0010). SELECT only.
WRITER_READABLE: tuple[str, ...] = (OFFSETS_TABLE, EVENTS_TABLE, DIGESTS_TABLE)  # the first-write check reads both
#: The log streams' tables: configuration (written by the API), positions (the deliverer after each batch, the API
#: when it creates a stream) and leases (the deliverers). INSERT only: every change is a new row version.
STREAMS_WRITABLE: tuple[str, ...] = (STREAMS_TABLE, STREAM_POSITIONS_TABLE, STREAM_LEASES_TABLE)
#: What the streams role reads besides its own tables: the events it delivers and the stored-offsets watermark.
STREAMS_READABLE: tuple[str, ...] = (EVENTS_TABLE, OFFSETS_TABLE, *STREAMS_WRITABLE)
#: Tables (and views) analysts may read (the digests: so an analyst can check their org's events, migration 0040).
ANALYST_TABLES: tuple[str, ...] = (EVENTS_TABLE, FLAT_VIEW, DAILY_COUNTS, CATALOG_TABLE, DIGESTS_TABLE,
                                   CONFLICTS_TABLE)
#: Tables that carry ``org_id`` and get the per-org row policies (views inherit them: SQL SECURITY INVOKER).
ORG_SCOPED_TABLES: tuple[str, ...] = (EVENTS_TABLE, DAILY_COUNTS, DIGESTS_TABLE, CONFLICTS_TABLE)
#: Tables no role may write, alter or delete at all (tamper evidence): written only by a materialized view.
APPEND_ONLY_TABLES: tuple[str, ...] = (DIGESTS_TABLE,)
#: Settings of the read-only roles (reader, analyst), CONST so a session cannot lift them. readonly = 2
#: rejects INSERT/ALTER/DELETE/TRUNCATE/DROP/CREATE but still allows per-query settings (limits, formats).
#: The API can also open its own connections with these settings as a second guard (works on chDB too).
READONLY_SETTINGS: dict[str, int] = {"readonly": 2}
#: Privileges no auditlog role may ever hold on the events (checked by the tests).
FORBIDDEN_PRIVILEGES: tuple[str, ...] = ("ALTER", "DELETE", "TRUNCATE", "DROP", "OPTIMIZE", "ALL", "UPDATE")

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def sql_literal(value: str) -> str:
    """A ClickHouse string literal for ``value`` (for DDL that cannot take bound parameters)."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("control characters are not allowed in access-control literals")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _on_cluster(cluster: str | None) -> str:
    return f" ON CLUSTER {check_ident(cluster, 'cluster name')}" if cluster else ""


def _objects(db: str, tables: Sequence[str], local_suffix_for: Sequence[str]) -> list[str]:
    """``db.<table>`` for each table, followed by ``db.<table>_local`` for those in ``local_suffix_for``."""
    return [f"{db}.{x}" for t in tables for x in ((t, f"{t}_local") if t in local_suffix_for else (t,))]


def role_statements(database: str, cluster: str | None = None, local_suffix_for: Sequence[str] = ()) -> list[str]:
    """The idempotent SQL that creates and grants the three roles for ``database``.

    ``local_suffix_for``: on a sharded cluster, the tables that also exist as ``<name>_local`` (a query
    through the Distributed table runs on every shard as the same user, so grants and row policies must
    cover the local tables too).
    """
    db = check_ident(database, "database name")
    oc = _on_cluster(cluster)

    def objs(*tables: str) -> list[str]:
        return _objects(db, tables, local_suffix_for)

    stmts = [f"CREATE ROLE IF NOT EXISTS {role}{oc}" for role in ROLES]
    ro = ", ".join(f"{k} = {int(v)} CONST" for k, v in READONLY_SETTINGS.items())
    stmts += [f"ALTER ROLE {role}{oc} SETTINGS {ro}" for role in (READER, ANALYST)]
    stmts += [f"GRANT{oc} INSERT ON {o} TO {WRITER}" for o in objs(EVENTS_TABLE, CONFLICTS_TABLE)]
    stmts += [f"GRANT{oc} SELECT ON {o} TO {WRITER}" for o in objs(*WRITER_READABLE)]
    stmts += [f"GRANT{oc} INSERT ON {o} TO {STREAMS}" for o in objs(*STREAMS_WRITABLE)]
    stmts += [f"GRANT{oc} SELECT ON {o} TO {STREAMS}" for o in objs(*STREAMS_READABLE)]
    stmts.append(f"GRANT{oc} SELECT ON {db}.* TO {READER}")
    stmts += [f"GRANT{oc} SELECT ON {o} TO {ANALYST}" for o in objs(*ANALYST_TABLES)]
    on_tables = ", ".join(objs(*ORG_SCOPED_TABLES))
    stmts.append(
        f"CREATE ROW POLICY OR REPLACE auditlog_reader_all_rows{oc} ON {on_tables} "
        f"AS PERMISSIVE FOR SELECT USING 1 TO {READER}, {WRITER}, {STREAMS}"
    )
    stmts.append(
        f"CREATE ROW POLICY OR REPLACE auditlog_analyst_no_org{oc} ON {on_tables} "
        f"AS PERMISSIVE FOR SELECT USING 0 TO {ANALYST}"
    )
    return stmts


def _identified(password: str | None, password_sha256: str | None) -> str:
    if password_sha256 is not None:
        if not _HEX64.match(password_sha256):
            raise ValueError("password_sha256 must be 64 hex digits (sha256 of the password)")
        return f"IDENTIFIED WITH sha256_hash BY {sql_literal(password_sha256.lower())}"
    if password is not None:
        if not password:
            raise ValueError("empty password")
        return f"IDENTIFIED WITH sha256_hash BY {sql_literal(hashlib.sha256(password.encode()).hexdigest())}"
    raise ValueError("a password or its sha256 is required")


def service_user_statements(
    user: str,
    role: str,
    *,
    password: str | None = None,
    password_sha256: str | None = None,
    cluster: str | None = None,
) -> list[str]:
    """SQL for a service account holding one role: the consumer ``writer``, the API ``reader``, ``auditlog
    stream`` and the API's stream configuration ``streams``.

    The password is sent as its SHA-256 only (``sha256_hash``), never in clear text.
    """
    u = check_ident(user, "user name")
    r = ROLE_ALIASES.get(role, role)
    if r not in SERVICE_ROLES:
        raise ValueError(f"service users hold one of {', '.join(SERVICE_ROLES)}, not {role!r}")
    oc = _on_cluster(cluster)
    ident = _identified(password, password_sha256)
    return [
        f"CREATE USER IF NOT EXISTS {u}{oc} {ident}",
        f"ALTER USER {u}{oc} {ident}",
        f"GRANT{oc} {r} TO {u}",
        f"ALTER USER {u}{oc} DEFAULT ROLE {r}",
    ]


def analyst_policy_name(user: str) -> str:
    return f"auditlog_org_{check_ident(user, 'user name')}"


def analyst_user_statements(
    database: str,
    user: str,
    org_id: str,
    *,
    password: str | None = None,
    password_sha256: str | None = None,
    cluster: str | None = None,
    local_suffix_for: Sequence[str] = (),
) -> list[str]:
    """SQL for an analyst user who sees one org's rows only (run after :func:`role_statements`)."""
    db = check_ident(database, "database name")
    u = check_ident(user, "user name")
    if not 1 <= len(org_id) <= 128:
        raise ValueError("org_id must be 1-128 characters")
    oc = _on_cluster(cluster)
    ident = _identified(password, password_sha256)
    on_tables = ", ".join(_objects(db, ORG_SCOPED_TABLES, local_suffix_for))
    return [
        f"CREATE USER IF NOT EXISTS {u}{oc} {ident}",
        f"ALTER USER {u}{oc} {ident}",
        f"GRANT{oc} {ANALYST} TO {u}",
        f"ALTER USER {u}{oc} DEFAULT ROLE {ANALYST}",
        f"CREATE ROW POLICY OR REPLACE {analyst_policy_name(u)}{oc} ON {on_tables} "
        f"AS PERMISSIVE FOR SELECT USING org_id = {sql_literal(org_id)} TO {u}",
    ]


def granted_privileges(statements: Sequence[str]) -> list[tuple[str, str, str]]:
    """(privilege, object, grantee) for every ``GRANT <privileges> ON <object> TO <grantee>`` statement."""
    out = []
    rx = re.compile(r"^GRANT(?: ON CLUSTER \w+)? (.+?) ON (\S+) TO (\w+)$")
    for s in statements:
        m = rx.match(s)
        if m:
            for priv in m.group(1).split(","):
                out.append((priv.strip().upper(), m.group(2), m.group(3)))
    return out


def can_manage_access(client: object) -> bool:
    """Whether this connection can create roles: a writable access storage and the CREATE ROLE grant.

    False on chDB (no writable user directory, no access management) and for non-admin users.
    """
    from clickhouse_connect.driver.client import Client

    assert isinstance(client, Client)
    try:
        dirs = client.query(
            "SELECT count() FROM system.user_directories WHERE type IN ('local_directory', 'replicated', 'memory')"
        ).result_rows[0][0]
        if not dirs:
            return False
        return bool(client.query("CHECK GRANT CREATE ROLE ON *.*").result_rows[0][0])
    except Exception:  # any refusal means "not an admin connection"
        return False


# ----- command line -------------------------------------------------------------------------------------
def _password_args(args: argparse.Namespace) -> dict[str, str | None]:
    pw = os.environ.get(args.password_env) if args.password_env else None
    if args.password_env and not pw:
        raise SystemExit(f"environment variable {args.password_env} is empty or unset")
    return {"password": pw, "password_sha256": args.password_sha256}


def _common_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    """The options valid before and after the subcommand (``--apply service ...`` and ``service ... --apply``);
    below the subcommand their defaults are suppressed so they never undo a value given before it."""
    d: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    p.add_argument("--database", **({"default": None} | d), help="database [AUDITLOG_CLICKHOUSE_DATABASE]")
    p.add_argument("--cluster", **({"default": None} | d), help="add ON CLUSTER <name>")
    p.add_argument("--sharded", action="store_true", **d,
                   help="the schema is sharded (deploy/cluster): also cover the <table>_local tables")
    p.add_argument("--apply", action="store_true", **d, help="execute on AUDITLOG_CLICKHOUSE_URL instead of printing")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m auditlogkit.server.db.roles", description=__doc__.split("\n\n")[0])
    _common_options(p, suppress=False)
    sub = p.add_subparsers(dest="what", required=True)
    _common_options(sub.add_parser("roles", help="the four roles, their grants and row policies"), suppress=True)
    for name in ("analyst", "service"):
        sp = sub.add_parser(name, help=f"a {name} user")
        _common_options(sp, suppress=True)
        sp.add_argument("--user", required=True)
        sp.add_argument("--password-env", default=None, help="name of the environment variable holding the password")
        sp.add_argument("--password-sha256", default=None, help="sha256 hex of the password")
        if name == "analyst":
            sp.add_argument("--org", required=True, help="the only org_id this analyst may read")
        else:
            sp.add_argument("--role", required=True, choices=["writer", "reader", "streams"])
    return p


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from auditlogkit.server.settings import Settings

    p = build_parser()
    args = p.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"invalid settings: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    database = args.database or settings.clickhouse_database
    from auditlogkit.server.db.migration_sql import sharded_tables

    local = sorted(sharded_tables()) if args.sharded else []
    if args.what == "roles":
        stmts = role_statements(database, args.cluster, local_suffix_for=local)
    elif args.what == "analyst":
        stmts = analyst_user_statements(
            database, args.user, args.org, cluster=args.cluster, local_suffix_for=local, **_password_args(args)
        )
    else:
        stmts = service_user_statements(args.user, args.role, cluster=args.cluster, **_password_args(args))
    if not args.apply:
        print(";\n".join(stmts) + ";")
        return 0
    from auditlogkit.server.store import connect, credentials

    client = connect(settings.store_url, **credentials(settings))
    try:
        for s in stmts:
            client.command(s)
    finally:
        client.close()
    print(f"applied {len(stmts)} statements to {database}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
