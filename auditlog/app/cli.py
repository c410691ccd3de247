"""The ``auditlog`` command. Subcommands live next to what they run and register themselves here:

- ``auditlogkit.server.app.cli_up`` : ``up`` (embedded all-in-one)
- ``auditlogkit.server.app.cli_migrate``: ``migrate``
- ``auditlogkit.server.app.cli_emit``: ``emit``
- ``auditlogkit.server.app.cli_token``: ``token`` (development API tokens)
- ``auditlogkit.server.app.cli_consume``: ``consume``; ``auditlogkit.consumers.cli``: ``dlq list``, ``dlq replay``
- ``auditlogkit.server.app.cli_api``: ``api``; ``auditlogkit.query_api.cli``: ``export``
- ``auditlogkit.server.app.cli_stream``: ``stream`` (the log streams' deliverer)
- ``auditlogkit.server.db.integrity``: ``verify`` (tamper evidence)

Each module exposes ``register(subparsers)`` that adds its parsers with ``func=<callable(args) -> int>``. The
commands that run the pipeline (``up``, ``api``, ``consume``) build their parts with :mod:`auditlogkit.server.app.compose`.
Settings come from ``AUDITLOG_*`` variables; flags override them (see ``auditlog <cmd> --help``).
The long-running commands (:data:`SERVICE_COMMANDS`) get their SIGTERM/SIGINT handlers before anything heavy is
imported (:mod:`auditlogkit.server.stopsignals`): a stop signal during start-up ends them cleanly with exit code 0.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from auditlogkit.server import __version__
from auditlogkit.server.stopsignals import stop_signals

COMMAND_MODULES = ("auditlogkit.server.app.cli_up", "auditlogkit.server.app.cli_migrate", "auditlogkit.server.app.cli_emit", "auditlogkit.server.app.cli_consume",
                   "auditlogkit.consumers.cli", "auditlogkit.server.app.cli_api", "auditlogkit.query_api.cli", "auditlogkit.server.db.integrity",
                   "auditlogkit.server.app.cli_token", "auditlogkit.server.app.cli_stream")
SERVICE_COMMANDS = frozenset({"up", "consume", "api", "stream"})


def settings_epilog() -> str:
    from auditlogkit.server.settings import Settings

    lines = ["environment (AUDITLOG_*):"]
    for name, f in Settings.model_fields.items():
        default = f.default if f.default is not None else "-"
        lines.append(f"  AUDITLOG_{name.upper():<24} {f.description} [default: {default}]")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditlog",
        description="Audit-log pipeline: producer SDK -> Kafka -> consumer -> ClickHouse -> API and page.",
        epilog=settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"auditlog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name != mod_name:
                raise
            continue
        mod.register(sub)
    return parser


def is_service(argv: list[str]) -> bool:
    """Whether ``argv`` runs a long-running command (its first non-option word; top-level options take none)."""
    return next((a for a in argv if not a.startswith("-")), None) in SERVICE_COMMANDS


def main(argv: list[str] | None = None) -> int:
    if is_service(sys.argv[1:] if argv is None else argv):
        stop_signals()
    from pydantic import ValidationError

    try:
        parser = build_parser()
    except ModuleNotFoundError as exc:  # the SDK alone is installed: the commands are the server's
        print(f"auditlog: the commands need the server's dependencies (missing: {exc.name}); install them with "
              "pip install 'auditlogkit[server]'", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ValidationError as exc:  # settings from AUDITLOG_* / flags that break a rule: say which, no traceback
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        print(f"auditlog: invalid settings: {problems}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
