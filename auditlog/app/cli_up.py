"""``auditlog up``: the embedded all-in-one (broker, consumer, API and page in one process)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from aiokafka.errors import KafkaError
from clickhouse_connect.driver.exceptions import ClickHouseError

from auditlogkit.server import logs
from auditlogkit.server.logs import get_logger
from auditlogkit.server.private_dir import keep_private, open_private_append
from auditlogkit.server.settings import Settings
from auditlogkit.server.stopsignals import StopSignals, stop_signals
from auditlogkit.server.store import redact_text, redact_url

if TYPE_CHECKING:
    from auditlogkit.server.app.embedded import EmbeddedStack

log = get_logger("auditlogkit.server.app.cli_up")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser(
        "up",
        help="run broker + consumer + API + page on 127.0.0.1 (embedded chDB store)",
        description="Start the embedded all-in-one on 127.0.0.1: a Tansu Kafka-compatible broker whose storage is "
        "durable (what it acknowledged survives a crash and is stored after the restart), the consumer and the "
        "API/page, over one data directory (private: 0700/0600). A broker part that dies is restarted. "
        "Ctrl-C or SIGTERM stops it within 10 s; events stay in --data.",
    )
    up.add_argument("--demo", action="store_true", help="publish realistic demo events (once per data dir) and print tokens")
    up.add_argument("--port", type=int, default=None, help="API/page port [AUDITLOG_API_PORT, 8000]")
    up.add_argument("--kafka-port", type=int, default=9092, help="broker port [9092]")
    up.add_argument("--data", default=None, help="data directory [AUDITLOG_DATA_DIR, ./.auditlog]")
    up.add_argument("--ephemeral", action="store_true",
                    help="keep the broker in memory (faster; what it acknowledged but had not stored is lost when "
                         "up stops or crashes: demos and tests)")
    up.set_defaults(func=cmd_up)


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
        logs.configure(settings.log_level, file=log_file, fmt=settings.log_format)
        return asyncio.run(_up(settings, args.kafka_port, args.demo, log_path, stops, ephemeral=args.ephemeral))


async def _up(settings: Settings, kafka_port: int, demo: bool, log_path: Path, stops: StopSignals, *,
              ephemeral: bool = False) -> int:
    from auditlogkit.server.app.embedded import EmbeddedStack, jwt_secret_for

    t0 = time.monotonic()
    settings = settings.model_copy(update={"jwt_secret": jwt_secret_for(settings)})
    stack = EmbeddedStack(settings, kafka_port, ephemeral=ephemeral)
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
    from auditlogkit.server.app.embedded import demo_tokens

    settings = stack.settings
    await stack.start()
    url = f"http://127.0.0.1:{settings.api_port}/"
    _banner(out, settings, url, stack, log_path, time.monotonic() - t0)
    if not demo:
        return
    _say(out, "Loading demo events through the producer ...")
    n, fresh = await stack.load_demo()
    _say(out, f"Demo events: {n} stored" + ("" if fresh else " (already in this data directory; not re-published)"))
    tokens = demo_tokens(settings.jwt_secret or "", audience=settings.jwt_audience, issuer=settings.jwt_issuer)
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


def _banner(out: TextIO, s: Settings, url: str, stack: EmbeddedStack, log_path: Path, took: float) -> None:
    b = stack.broker
    kept = f"durable, {b.storage_dir}" if b.durable else "memory only (--ephemeral)"
    _say(out, f"auditlog is up ({took:.1f} s)")
    _say(out, f"  Page      {url}")
    _say(out, f"  API docs  {url}docs")
    _say(out, f"  Broker    {b.bootstrap}   topics: {s.topic}, {s.dlq_topic} ({s.topic_partitions} partitions); "
              f"{kept}")
    _say(out, f"  Store     {redact_url(s.store_url)}   database: {s.clickhouse_database}")
    _say(out, f"  Logs      {log_path}")
