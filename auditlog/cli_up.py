"""``auditlog up`` (embedded all-in-one), ``auditlog migrate`` and ``auditlog emit``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from aiokafka.errors import KafkaError
from clickhouse_connect.driver.exceptions import ClickHouseError

from auditlog import logs
from auditlog.logs import get_logger
from auditlog.private_dir import keep_private, open_private_append
from auditlog.settings import Settings
from auditlog.stopsignals import StopSignals, stop_signals
from auditlog.store import redact_error, redact_text, redact_url

if TYPE_CHECKING:
    from auditlog.embedded import EmbeddedStack

log = get_logger("auditlog.up")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser(
        "up",
        help="run broker + consumer + API + page on 127.0.0.1 (embedded chDB store)",
        description="Start the embedded all-in-one on 127.0.0.1: a Tansu Kafka-compatible broker (memory only), "
        "the consumer and the API/page in one process over one chDB data directory (private: 0700/0600). "
        "Ctrl-C or SIGTERM stops it; "
        "stored events stay in --data.",
    )
    up.add_argument("--demo", action="store_true", help="publish realistic demo events (once per data dir) and print tokens")
    up.add_argument("--port", type=int, default=None, help="API/page port [AUDITLOG_API_PORT, 8000]")
    up.add_argument("--kafka-port", type=int, default=9092, help="broker port [9092]")
    up.add_argument("--data", default=None, help="data directory [AUDITLOG_DATA_DIR, ./.auditlog]")
    up.set_defaults(func=cmd_up)

    from auditlog.migrations import add_arguments

    mig = sub.add_parser(
        "migrate",
        help="create or upgrade the ClickHouse schema (idempotent, safe to run concurrently)",
        description="Apply schemas/migrations in order, then the repeatable steps: catalog labels, retention TTL "
        "(AUDITLOG_RETENTION_DAYS), and with admin credentials on a server the least-privilege roles.",
    )
    add_arguments(mig)
    mig.set_defaults(func=cmd_migrate)

    emit = sub.add_parser(
        "emit",
        help="publish audit events from JSON/NDJSON (file or stdin) or from flags",
        description="Validate and publish events. Input: a JSON object, a JSON array or NDJSON, from FILE or "
        "stdin ('-'); or one event built from flags. Every event is validated first; if any is invalid nothing "
        "is sent (unless --skip-invalid) and the reasons are printed with their line numbers.",
    )
    emit.add_argument("file", nargs="?", help="JSON/NDJSON file, or '-' for stdin")
    emit.add_argument("--bootstrap", default=None, help="Kafka bootstrap [AUDITLOG_KAFKA_BOOTSTRAP]")
    emit.add_argument("--topic", default=None, help="topic [AUDITLOG_TOPIC]")
    emit.add_argument("--skip-invalid", action="store_true", help="send the valid events even if some are invalid")
    for flag in ("org", "workspace", "scope", "category", "action", "status", "actor-id", "actor-email",
                 "actor-type", "ip", "user-agent", "target-type", "target-id", "target-name", "description",
                 "source", "request-id", "occurred-at", "event-id"):
        emit.add_argument(f"--{flag}", default=None)
    emit.add_argument("--detail", default=None, help="detail as a JSON object")
    emit.set_defaults(func=cmd_emit)


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return Settings().with_overrides(data=getattr(args, "data", None), **overrides)


# ----- up -------------------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    """Run the embedded stack until SIGTERM/SIGINT (exit 0) or a part fails (exit 1). The data directory and
    everything in it are private to the user (umask 077, existing entries tightened at start)."""
    stops = stop_signals()
    overrides: dict[str, Any] = {"kafka_bootstrap": f"127.0.0.1:{args.kafka_port}"}
    if args.port is not None:
        overrides["api_port"] = args.port
    settings = _settings(args, **overrides)
    keep_private(settings.data_dir)
    log_path = settings.data_dir / "auditlog.log"
    with open_private_append(log_path) as log_file:
        logs.configure(settings.log_level, file=log_file)
        return asyncio.run(_up(settings, args.kafka_port, args.demo, log_path, stops))


async def _up(settings: Settings, kafka_port: int, demo: bool, log_path: Path, stops: StopSignals) -> int:
    from auditlog.embedded import EmbeddedStack, jwt_secret_for

    t0 = time.monotonic()
    settings = settings.model_copy(update={"jwt_secret": jwt_secret_for(settings)})
    stack = EmbeddedStack(settings, kafka_port)
    stop = asyncio.Event()
    out = sys.stdout
    ready = False

    def on_signal(name: str) -> None:
        log.info("up.stop_requested", signal=name, ready=ready)
        stop.set()

    with stops.on_loop(on_signal):
        try:
            _say(out, f"auditlog: starting (data {settings.data_dir}) ...")
            if await _unless_stopped(_start(stack, demo, log_path, t0, out), stop):
                _say(out, "READY (Ctrl-C to stop)")
                ready = True
                failed = await _run_until_stopped(stack, stop)
                if failed is not None:
                    _say(out, f"auditlog: {failed.get_name()} stopped unexpectedly; see {log_path}")
                    return 1
            _say(out, "auditlog: stopping ...")
            return 0
        except (OSError, RuntimeError, TimeoutError, KafkaError, ClickHouseError) as exc:  # port taken, not ready
            msg = redact_text(str(exc), settings.store_url)
            _say(out, f"auditlog: {'failed' if ready else 'cannot start'}: {msg} (details in {log_path})")
            log.error("up.failed", error=redact_text(repr(exc), settings.store_url))
            return 1
        finally:
            await stack.stop()
            _say(out, "auditlog: stopped")


async def _start(stack: EmbeddedStack, demo: bool, log_path: Path, t0: float, out: TextIO) -> None:
    """Start the stack, print the banner and, with ``demo``, load the demo events and print the tokens."""
    from auditlog.embedded import demo_tokens

    settings = stack.settings
    await stack.start()
    url = f"http://127.0.0.1:{settings.api_port}/"
    _banner(out, settings, url, stack.broker.bootstrap, log_path, time.monotonic() - t0)
    if not demo:
        return
    _say(out, "Loading demo events through the producer ...")
    n, fresh = await stack.load_demo()
    _say(out, f"Demo events: {n} stored" + ("" if fresh else " (already in this data directory; not re-published)"))
    tokens = demo_tokens(settings.jwt_secret or "")
    _say(out, "")
    _say(out, "Sign-in tokens (paste into the page; valid 12 h):")
    _say(out, "  org owner of acme (kim@acme.example, all workspaces):")
    _say(out, f"OWNER_TOKEN={tokens['owner']}")
    _say(out, "  workspace admin of acme / ml-research, inference-prod (lee@acme.example):")
    _say(out, f"ADMIN_TOKEN={tokens['admin']}")
    _say(out, "")
    _say(out, f'Try: curl -s -H "Authorization: Bearer $OWNER_TOKEN" "{url}v1/events?limit=5"')


async def _unless_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``work`` to its end (True; its exception propagates) unless ``stop`` is set first: then cancel it and
    return False."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception) as exc:  # start-up abandoned: the stack's stop() cleans up
        log.info("up.start_cancelled", outcome=type(exc).__name__)
    return False


async def _run_until_stopped(stack: EmbeddedStack, stop: asyncio.Event) -> asyncio.Task[None] | None:
    """Wait for ``stop``; the first task of the stack that ended on its own instead, if any."""
    while not stop.is_set():
        failed = stack.failed_task
        if failed is not None:
            return failed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
    return None


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


def _banner(out: TextIO, s: Settings, url: str, bootstrap: str, log_path: Path, took: float) -> None:
    _say(out, f"auditlog is up ({took:.1f} s)")
    _say(out, f"  Page      {url}")
    _say(out, f"  API docs  {url}docs")
    _say(out, f"  Broker    {bootstrap}   topics: {s.topic}, {s.dlq_topic} ({s.topic_partitions} partitions)")
    _say(out, f"  Store     {redact_url(s.store_url)}   database: {s.clickhouse_database}")
    _say(out, f"  Logs      {log_path}")


# ----- migrate --------------------------------------------------------------------------------------------
def cmd_migrate(args: argparse.Namespace) -> int:
    from auditlog.migrations import run_cli

    settings = _settings(args)
    logs.configure(settings.log_level)
    try:
        return run_cli(args, settings)
    except Exception as exc:  # the store's URL may carry a password: never in the message
        msg = redact_error(exc, settings.store_url)
        log.error("migrate.failed", store=redact_url(settings.store_url), error=msg)
        print(f"auditlog migrate: failed on {redact_url(settings.store_url)}: {msg}", file=sys.stderr)
        return 1


# ----- emit -----------------------------------------------------------------------------------------------
def _read_events(args: argparse.Namespace) -> Iterator[tuple[int, Any]]:
    if args.file:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        stripped = text.strip()
        if stripped.startswith("["):
            yield from enumerate(json.loads(stripped), start=1)
            return
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield n, line
        return
    ev: dict[str, Any] = {}
    simple = {"org": "org_id", "workspace": "workspace_id", "scope": "scope", "category": "category",
              "action": "action", "status": "status", "description": "description", "source": "source",
              "request_id": "request_id", "occurred_at": "occurred_at", "event_id": "event_id"}
    for flag, key in simple.items():
        if getattr(args, flag) is not None:
            ev[key] = getattr(args, flag)
    actor = {k: getattr(args, f"actor_{k}") for k in ("id", "email", "type") if getattr(args, f"actor_{k}")}
    if args.ip:
        actor["ip"] = args.ip
    if args.user_agent:
        actor["user_agent"] = args.user_agent
    actor.setdefault("type", "user")
    ev["actor"] = actor
    target = {k: getattr(args, f"target_{k}") for k in ("type", "id", "name") if getattr(args, f"target_{k}")}
    if target:
        ev["target"] = target
    if args.detail:
        ev["detail"] = json.loads(args.detail)
    from schemas.event import Status

    ev.setdefault("status", Status.SUCCESS.value)
    if ev.get("action") and "category" not in ev:
        ev["category"] = ev["action"].split(".", 1)[0]
    yield 1, ev


def cmd_emit(args: argparse.Namespace) -> int:
    from producers.producer import InvalidEvent, coerce_event
    from schemas.catalog import get_catalog

    settings = Settings()
    logs.configure("warning")
    catalog = get_catalog(settings.catalog_extra)
    good, bad = [], 0
    try:
        items = list(_read_events(args))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: cannot read events: {exc}", file=sys.stderr)
        return 2
    for n, item in items:
        try:
            data = json.loads(item) if isinstance(item, str) else item
            if not isinstance(data, dict):
                raise InvalidEvent("event", "must be a JSON object")
            good.append(coerce_event(data, catalog))
        except json.JSONDecodeError as exc:
            bad += 1
            print(f"line {n}: not valid JSON: {exc.msg}", file=sys.stderr)
        except InvalidEvent as exc:
            bad += 1
            print(f"line {n}: invalid {exc.field}: {exc.reason}", file=sys.stderr)
    if bad and not args.skip_invalid:
        print(f"{bad} invalid event(s); nothing sent (use --skip-invalid to send the {len(good)} valid ones)",
              file=sys.stderr)
        return 1
    from auditlog.kafka import KafkaConnection

    kafka = KafkaConnection.from_settings(settings, bootstrap=args.bootstrap)
    bootstrap = str(kafka)
    topic = args.topic or settings.topic

    async def send() -> int:
        from producers import AuditProducer

        async with AuditProducer(kafka.bootstrap, topic, catalog=catalog, request_timeout_ms=15000,
                                 **kafka.security_options()) as p:
            return await p.send_many(good)

    try:
        sent = asyncio.run(send())
    except Exception as exc:
        print(f"error: could not publish to {bootstrap}: {exc}", file=sys.stderr)
        return 3
    for ev in good if len(good) <= 20 else []:
        print(f"sent {ev.event_id} {ev.org_id} {ev.scope}/{ev.action} {ev.status}")
    print(f"{sent} event(s) published to {topic} on {bootstrap}" + (f"; {bad} invalid skipped" if bad else ""))
    return 1 if bad else 0
