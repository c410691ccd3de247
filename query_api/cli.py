"""``auditlog export``, and the serving of ``auditlog api`` (its parts are composed by the application layer).

- :func:`serve_api`: uvicorn with the given app until a stop signal. Every read publishes its ``audit_log.*`` event
  through a producer of its own (``POST /v1/ingest`` has another, so reads' acks never wait behind ingest traffic);
  until it is attached (the broker unreachable at start) reads are refused with 503 ``audit_unavailable``,
  ``/readyz`` says ``self_audit: connecting`` and :func:`attach_self_audit` retries with backoff
  (``api.self_audit_unavailable``); the producers are stopped after the server.
- ``export``: writes the filtered view to a file with a progress bar. Two modes:
  * ``--url http://127.0.0.1:8000 --token JWT``: through the HTTP API (what a user does; works while
    ``auditlog up`` holds the chDB directory); the total for the progress bar comes from ``/v1/stats``;
  * ``--org ORG [--workspace W ...]``: straight from the store as that org's owner (or as an admin of the given
    workspaces), for operators on the store's host; same SQL, scoping and formatting as the API.
  Filters: one flag per entry of :data:`auditlogkit.query_api.read.filters.FILTERS` (``--start --end --scope --category --action``
  (repeatable) ``--status --actor-email --actor-id --ip --workspace-id --target --q --org-id``), validated by the
  same table as the API's parameters; ``--format csv|ndjson``; ``-o FILE`` (exactly that path; default: the name the
  server or the filters suggest, ``audit-log-<start>-<end>.<ext>``, reduced to a plain file name in the current
  directory by :func:`safe_filename`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from auditlogkit.query_api.read.filters import FILTERS
from auditlogkit.server.logs import configure, get_logger
from auditlogkit.server.settings import Settings, is_loopback
from auditlogkit.server.stopsignals import StopSignals

if TYPE_CHECKING:
    from auditlogkit.producer import AuditProducer

log = get_logger("auditlogkit.query_api.cli")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    e = sub.add_parser("export", help="export the filtered audit log to a CSV/NDJSON file (progress bar)")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--url", help="API base URL, e.g. http://127.0.0.1:8000 (needs --token)")
    src.add_argument("--org", help="read the store directly, scoped to this org (operators)")
    e.add_argument("--token", help="JWT with audit:read and audit:export (for --url)")
    e.add_argument("--workspace", action="append", default=None,
                   help="with --org: act as admin of this workspace (repeatable); default: org owner")
    e.add_argument("--format", choices=("csv", "ndjson"), default="csv", help="file format: csv or ndjson [csv]")
    e.add_argument("-o", "--output", help="output file (default audit-log-<start>-<end>.<ext>)")
    for spec in FILTERS:  # one flag per filter of the table, with the API's description
        e.add_argument(spec.flag, dest=spec.name, action="append" if spec.repeatable else "store", default=None,
                       help=spec.help.replace("%", "%%"))
    e.set_defaults(func=run_export)


# ----- api ---------------------------------------------------------------------------------------------------
def warn_unchecked_claims(settings: Settings, host: str) -> bool:
    """Warn (log + one stderr line) when the API listens beyond loopback while tokens' ``aud``/``iss`` are not
    checked; True if it warned."""
    missing = [name for name, value in (("AUDITLOG_JWT_AUDIENCE", settings.jwt_audience),
                                        ("AUDITLOG_JWT_ISSUER", settings.jwt_issuer)) if not value]
    if not missing or is_loopback(host):
        return False
    get_logger("auditlogkit.query_api.cli").warning("api.token_claims_unchecked", host=host, missing=missing)  # not cached: tests capture it
    print(f"auditlog api: warning: listening on {host} without checking the tokens' audience/issuer: "
          f"set {' and '.join(missing)}", file=sys.stderr)
    return True


async def serve_api(settings: Settings, app: Any, host: str, port: int, stops: StopSignals, *,
                    make_audit_producer: Callable[[], AuditProducer],
                    make_ingest_producer: Callable[[], AuditProducer], where: str) -> None:
    """uvicorn with ``app`` until a stop signal, its producers attached meanwhile (:func:`attach_self_audit`;
    ``where``: the broker, for logs); then the producers (self-audit, ingest) are stopped."""
    from auditlogkit.query_api.core.serving import AppServer
    from auditlogkit.query_api.security.client_ip import proxy_options
    from auditlogkit.query_api.security.self_audit import SelfAuditState

    app.state.auditor.state = SelfAuditState.CONNECTING  # until attach_self_audit has a producer
    attach = asyncio.create_task(attach_self_audit(app, make_audit_producer, where,
                                                   make_ingest_producer=make_ingest_producer))
    server = AppServer(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                      **proxy_options(settings)))

    def on_signal(name: str) -> None:  # graceful: stop serving, then stop the producers
        log.info("api.stop_requested", signal=name)
        server.should_exit = True

    with stops.on_loop(on_signal):
        print(f"auditlog api on http://{host}:{port}/ (docs at /docs)", file=sys.stderr)
        try:
            await server.serve()
        finally:
            attach.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attach
            for producer in (app.state.auditor.producer, app.state.ingest_producer):
                if producer is not None:
                    await producer.stop()


async def attach_self_audit(app: Any, make_producer: Callable[[], AuditProducer], where: str,
                            max_delay: float = 30.0, *,
                            make_ingest_producer: Callable[[], AuditProducer] | None = None) -> None:
    """Start the self-audit producer, then (``make_ingest_producer``) the separate one of ``POST /v1/ingest``
    (``app.state.ingest_producer``), each retrying with capped backoff while Kafka is unreachable; reads are
    refused meanwhile (``/readyz`` says ``self_audit: connecting``) and served and audited once the self-audit's
    producer is up; ingest answers 503 until its own is."""
    app.state.auditor.attach(await _started(make_producer, where, "self_audit", max_delay))
    log.info("api.self_audit_ready", bootstrap=where)
    if make_ingest_producer is not None:
        app.state.ingest_producer = await _started(make_ingest_producer, where, "ingest", max_delay)
        log.info("api.ingest_ready", bootstrap=where)


async def _started(make_producer: Callable[[], AuditProducer], where: str, what: str,
                   max_delay: float) -> AuditProducer:
    """A started producer, retrying with capped backoff (``api.<what>_unavailable``) until Kafka answers."""
    delay = 1.0
    while True:
        producer = make_producer()
        try:
            await asyncio.wait_for(producer.start(), 10)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            if not isinstance(exc, Exception):  # cancelled (a stop during start-up)
                raise
            log.error(f"api.{what}_unavailable", bootstrap=where, error=repr(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
            continue
        return producer


# ----- export ------------------------------------------------------------------------------------------------
def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """The filter flags given, by filter name (= the API's query parameters)."""
    return {spec.name: getattr(args, spec.name) for spec in FILTERS if getattr(args, spec.name) is not None}


def _progress(total_known: bool) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if not total_known:  # a pulsing bar and a running count
        return Progress(TextColumn("[bold]export"), BarColumn(), TextColumn("{task.completed:,.0f} rows"),
                        TimeElapsedColumn(), transient=False)
    return Progress(TextColumn("[bold]export"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
                    TimeElapsedColumn(), TimeRemainingColumn(), transient=False)


def run_export(args: argparse.Namespace) -> int:
    settings = Settings()
    configure(settings.log_level, fmt=settings.log_format)
    filters = _filters(args)
    try:
        if args.url:
            if not args.token:
                print("auditlog export: --url needs --token", file=sys.stderr)
                return 2
            name, total, chunks = _http_source(args.url, args.token, filters, args.format)
        else:
            name, total, chunks = _store_source(settings, args.org, args.workspace, filters, args.format)
    except ExportError as exc:
        print(f"auditlog export: {exc}", file=sys.stderr)
        return 1
    path = Path(args.output) if args.output else Path(safe_filename(name, args.format))
    lines = 0
    with _progress(total is not None) as progress, path.open("wb") as out:
        task = progress.add_task("export", total=total)
        for chunk in chunks:
            out.write(chunk)
            lines += chunk.count(b"\n")  # CSV cells may hold newlines: the bar is approximate, the file is not
            progress.update(task, completed=lines if total is None else min(lines, total))
        if total is not None:
            progress.update(task, completed=total)
    rows = f"{total:,} rows" if total is not None else f"{lines:,} lines"
    print(f"wrote {path} ({path.stat().st_size:,} bytes, {rows})", file=sys.stderr)
    return 0


class ExportError(Exception):
    pass


_NOT_PORTABLE = re.compile(r"[^A-Za-z0-9._-]")
MAX_FILENAME = 200


def disposition_filename(header: str) -> str | None:
    """The (unsanitised) file name of a ``Content-Disposition`` header value (``filename*`` or ``filename``)."""
    from email.message import Message

    msg = Message()
    msg["Content-Disposition"] = header
    return msg.get_filename()


def safe_filename(name: str | None, fmt: str) -> str:
    """A file name for the current directory from a name the server suggested: its last path component
    (``/`` or ``\\``), only ``[A-Za-z0-9._-]``, no leading dot or dash, at most 200 characters;
    ``audit-log.<fmt>`` when nothing usable is left."""
    base = re.split(r"[/\\]", name or "")[-1]
    clean = _NOT_PORTABLE.sub("", base).lstrip(".-")[:MAX_FILENAME]
    return clean or f"audit-log.{fmt}"


def _http_source(url: str, tok: str, filters: dict[str, Any], fmt: str) -> tuple[str, int | None, Iterator[bytes]]:
    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {tok}"}

    def get(path: str, params: dict[str, Any]) -> Any:
        q = urllib.parse.urlencode(params, doseq=True)
        req = urllib.request.Request(f"{base}{path}?{q}", headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=60)
        except urllib.error.HTTPError as exc:
            try:
                msg = json.loads(exc.read())["error"]["message"]
            except Exception:
                msg = exc.reason
            raise ExportError(f"{exc.code}: {msg}") from None
        except urllib.error.URLError as exc:
            raise ExportError(f"cannot reach {base}: {exc.reason}") from None

    total: int | None = None  # the progress bar's total; unknown when stats cannot count this range by day
    try:
        with get("/v1/stats", {**filters, "interval": "day"}) as r:
            total = int(json.loads(r.read())["total"])
    except ExportError as exc:
        if not str(exc).startswith("422: ") or "buckets exceed" not in str(exc):
            raise
    resp = get("/v1/events/export", {**filters, "format": fmt})
    name = disposition_filename(resp.headers.get("Content-Disposition", "")) or f"audit-log.{fmt}"

    def chunks() -> Iterator[bytes]:
        with resp:
            while block := resp.read(1 << 20):
                yield block

    return name, total, chunks()


def _store_source(settings: Settings, org: str, workspaces: list[str] | None, filters: dict[str, Any],
                  fmt: str) -> tuple[str, int | None, Iterator[bytes]]:
    from auditlogkit.query_api.read import events as events_read
    from auditlogkit.query_api.read.export import export_filename, open_export_sync
    from auditlogkit.query_api.read.filters import FilterError, parse_filters
    from auditlogkit.query_api.security.principal import EXPORT, READ, Principal
    from auditlogkit.query_api.security.scoping import ScopedQuery
    from auditlogkit.schemas.catalog import get_catalog
    from auditlogkit.server.store import Store

    catalog = get_catalog(settings.catalog_extra)
    store = Store.from_settings(settings)
    principal = Principal(sub="cli", email="", org_id=org, role="workspace_admin" if workspaces else "org_owner",
                          workspaces=tuple(workspaces or ()), permissions=frozenset({READ, EXPORT}))
    try:
        f = parse_filters(catalog, filters)
        sq = ScopedQuery(principal).with_filters(f, catalog)
    except FilterError as exc:
        raise ExportError(f"{exc.field}: {exc.message}") from None
    total = events_read.count(store, sq)
    chunks = open_export_sync(store, sq, catalog, fmt)
    name = export_filename(f, fmt)
    return name, total, chunks
