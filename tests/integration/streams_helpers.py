"""Shared helpers of the log-stream tests (no tests here): a real local HTTP receiver, events stored on chosen
Kafka positions, settings and a repository over the test's chDB store, a deliverer run as a task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from auditlogkit.query_api.streams.deliverer import Deliverer
from auditlogkit.query_api.streams.keys import new_key_text, streams_key
from auditlogkit.query_api.streams.ssrf import Resolver, system_resolver
from auditlogkit.query_api.streams.store import StreamStore
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.event import parse_event
from auditlogkit.schemas.rows import event_row
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.integration.test_api_helpers import insert_rows

TOPIC = "audit.events.streams"
Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0
    """The status it was answered with (0 while it is being answered)."""
    method: str = "POST"

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 (its own threads) that records every request (any method) and answers with ``respond``
    (default 200); ``delay`` seconds per request; per ``X-Auditlog-Stream`` the most requests in flight at once.
    ``port``: the port to listen on (0: any free one), e.g. one a destination was refused on until now."""

    respond: Callable[[Received, int], Reply] | None = None
    delay: float = 0.0
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                req = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic(),
                               method=self.command)
                stream = req.headers.get("x-auditlog-stream", "")
                with outer._lock:
                    outer.requests.append(req)
                    n = len(outer.requests)
                    outer.in_flight[stream] = outer.in_flight.get(stream, 0) + 1
                    outer.max_in_flight[stream] = max(outer.max_in_flight.get(stream, 0), outer.in_flight[stream])
                try:
                    if outer.delay:
                        time.sleep(outer.delay)
                    status, headers, out = outer.respond(req, n) if outer.respond else (200, {}, b"ok")
                finally:
                    with outer._lock:
                        outer.in_flight[stream] -= 1
                req.status = status
                self.send_response(status)
                for k, v in {"Content-Length": str(len(out)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_PUT = do_POST  # recorded too: what a followed redirect would send

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ok(self) -> list[Received]:
        """The requests answered 2xx, in arrival order."""
        return [r for r in list(self.requests) if 200 <= r.status < 300]

    def events(self, stream: str | None = None) -> list[dict[str, Any]]:
        """Every event of every request (of ``stream``), in arrival order."""
        return [e for r in list(self.requests) if stream in (None, r.headers.get("x-auditlog-stream"))
                for e in r.lines()]


def settings_for(store: Store, data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(
        data_dir=data_dir, clickhouse_url=store.url, clickhouse_database=store.database, topic=TOPIC,
        streams_key=new_key_text(), streams_allow_hosts="127.0.0.1", streams_lease_seconds=3.0,
        streams_batch_seconds=0.1, streams_backoff_max_seconds=1.0, streams_request_timeout_seconds=5.0,
        jwt_secret="test-secret-0123456789abcdef0123456789")
    return Settings(**{**base, **overrides})


def repo_for(store: Store, settings: Settings, resolver: Resolver = system_resolver) -> StreamStore:
    assert settings.streams_key is not None
    key = streams_key(settings.streams_key.get_secret_value())
    return StreamStore.from_settings(store, settings, get_catalog(), key, resolver=resolver)


def deliverer_for(store: Store, settings: Settings, holder: str, resolver: Resolver = system_resolver) -> Deliverer:
    assert settings.streams_key is not None
    key = streams_key(settings.streams_key.get_secret_value())
    return Deliverer.from_settings(store, settings, get_catalog(), key, holder=holder, resolver=resolver)


_offsets: dict[int, int] = {}


def put_events(store: Store, events: Iterable[dict[str, Any]], partition: int = 0,
               topic: str = TOPIC) -> list[tuple[int, int, str]]:
    """Store ``events`` as the consumer would, at the next offsets of ``partition``; their (partition, offset,
    event_id), in order."""
    now = datetime.now(UTC)
    rows, places = [], []
    for i, e in enumerate(events):
        offset = _offsets.get(partition, 0)
        _offsets[partition] = offset + 1
        rows.append(event_row(parse_event(e), now + timedelta(milliseconds=i), topic, partition, offset))
        places.append((partition, offset, str(e["event_id"])))
    if rows:
        insert_rows(store, rows)
    return places


async def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(d: Deliverer) -> AsyncIterator[Deliverer]:
    """``d`` running as a task; stopped (gracefully) and awaited on exit."""
    task = asyncio.create_task(d.run())
    try:
        yield d
    finally:
        d.request_stop()
        await asyncio.wait_for(task, timeout=15)
