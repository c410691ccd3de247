"""``auditlog migrate``: create or upgrade the ClickHouse schema (the work is :mod:`auditlogkit.server.db.migrations`)."""

from __future__ import annotations

import argparse
import sys

from auditlogkit.server import logs
from auditlogkit.server.logs import get_logger
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import redact_error, redact_url

log = get_logger("auditlogkit.server.app.cli_migrate")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from auditlogkit.server.db.migrations import add_arguments

    mig = sub.add_parser(
        "migrate",
        help="create or upgrade the ClickHouse schema (idempotent, safe to run concurrently)",
        description="Apply schemas/migrations in order, then the repeatable steps: catalog labels, retention TTL "
        "(AUDITLOG_RETENTION_DAYS), and with admin credentials on a server the least-privilege roles.",
    )
    add_arguments(mig)
    mig.set_defaults(func=cmd_migrate)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings().with_overrides(data=args.data)


def cmd_migrate(args: argparse.Namespace) -> int:
    from auditlogkit.server.db.migrations import run_cli

    settings = _settings(args)
    logs.configure(settings.log_level, fmt=settings.log_format)
    try:
        return run_cli(args, settings)
    except Exception as exc:  # the store's URL may carry a password: never in the message
        msg = redact_error(exc, settings.store_url)
        log.error("migrate.failed", store=redact_url(settings.store_url), error=msg)
        print(f"auditlog migrate: failed on {redact_url(settings.store_url)}: {msg}", file=sys.stderr)
        return 1
