"""The embedded all-in-one behind ``auditlog up``: broker + consumer + API + page in one process.

Contract of :class:`EmbeddedStack`:
- :meth:`start` starts the Tansu broker on ``127.0.0.1:<kafka_port>`` (durable, its files under
  ``<data>/broker``, unless ``ephemeral``: memory only), creates the topics and, with the parts of
  :mod:`auditlogkit.server.app.compose` (the operator's catalog everywhere), migrates the chDB store under the data
  directory, starts the producers (one for ingest and the demo, one of its own for the self-audit, so reads' acks
  never wait behind ingest traffic), the consumer worker (an asyncio task), the log streams' deliverer (another
  task, with ``AUDITLOG_STREAMS_KEY`` or the key generated into the data directory) and the API (uvicorn on
  ``127.0.0.1:<api_port>``), and returns when the API answers;
- :meth:`load_demo` publishes the demo data through the real producer once per data directory and waits until
  the consumer has stored it;
- while it runs, a broker part that dies is restarted on its ports within a second (:meth:`supervise`; ``/readyz``
  is 503 meanwhile) and the clients reconnect;
- :meth:`stop` stops the API, then the consumer (flush + commit) and the deliverer (its batches in flight), the
  producers and the broker (by PID), within :data:`STOP_SECONDS` whether the broker is alive or not; the chDB data
  and the durable broker's stay, so a second ``up`` on the same directory keeps the stored events and delivers what
  was acknowledged but not stored.
chDB allows one engine per process: that is why everything runs in this one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from typing import TYPE_CHECKING, Any

import uvicorn

from auditlogkit import AuditProducer
from auditlogkit.query_api.streams.keys import ensure_streams_key
from auditlogkit.schemas.tables import EVENTS_TABLE
from auditlogkit.server.app.compose import Composition
from auditlogkit.server.app.demo import DEMO_ADMIN_WORKSPACES, DEMO_ORGS, demo_events
from auditlogkit.server.broker import EmbeddedBroker, ensure_topics
from auditlogkit.server.logs import get_logger
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import redact_url

if TYPE_CHECKING:
    from auditlogkit.query_api.core.serving import AppServer

log = get_logger("auditlogkit.server.app.embedded")
STOP_SECONDS = 8.0  # SIGTERM to exit: the API and the consumer share it, then producers (1 s each) and the broker
SUPERVISE_SECONDS = 0.5


def jwt_secret_for(settings: Settings) -> str:
    """The configured secret, else one generated once and kept (0600) in the data directory."""
    if settings.jwt_secret:
        return settings.jwt_secret
    path = settings.data_dir / "jwt-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


class EmbeddedStack:
    def __init__(self, settings: Settings, kafka_port: int, *, ephemeral: bool = False) -> None:
        self.settings = settings
        self.broker = EmbeddedBroker(kafka_port, log_file=settings.data_dir / "tansu.log",
                                     storage_dir=None if ephemeral else settings.data_dir / "broker")
        self.parts = Composition(settings, bootstrap=self.broker.bootstrap)
        self.store = self.parts.store()
        self.producer: AuditProducer | None = None
        self.audit_producer: AuditProducer | None = None
        self.worker: Any = None
        self.deliverer: Any = None
        self.server: AppServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, timeout: float = 30.0) -> None:
        from auditlogkit.query_api.core.serving import AppServer
        from auditlogkit.query_api.security.client_ip import proxy_options

        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.broker.start()  # on the loop's (main) thread: the broker dies with it (PR_SET_PDEATHSIG)
        await ensure_topics(self.broker.bootstrap, [s.topic, s.dlq_topic], s.topic_partitions)
        applied = await asyncio.to_thread(self.parts.migrate, self.store)
        log.info("store.ready", url=redact_url(self.store.url), migrations_applied=applied)
        self.producer = self.parts.ingest_producer()
        await self.producer.start()
        self.audit_producer = self.parts.self_audit_producer()
        await self.audit_producer.start()
        # the API shares this process: ingest runs at a lower CPU priority, its decoding in a helper when auto
        ws = s.with_overrides(consumer_nice=max(10, s.consumer_nice), consumer_decode_processes=(
            s.consumer_decode_processes if s.consumer_decode_processes >= 0 else max(1, s.decode_processes())))
        key = ensure_streams_key(s.data_dir, s.streams_key.get_secret_value() if s.streams_key else None)
        self.deliverer = self.parts.stream_deliverer(self.store, key)
        self.worker = self.parts.consumer_worker(self.store, ws, on_stored=self.deliverer.stored)  # streams wake
        self._tasks.append(asyncio.create_task(self.worker.run(), name="consumer"))
        self._tasks.append(asyncio.create_task(self.deliverer.run(), name="streams"))
        app = self.parts.api_app(self.store, producer=self.producer, audit_producer=self.audit_producer,
                                 consumer_status=self.worker.status, parts_status=self.broker.parts,
                                 streams_key=key)
        config = uvicorn.Config(app, host="127.0.0.1", port=s.api_port, log_config=None, access_log=False,
                                lifespan="on", timeout_graceful_shutdown=5, **proxy_options(s))
        self.server = AppServer(config)
        self._tasks.append(asyncio.create_task(self.server.serve(), name="api"))
        self._tasks.append(asyncio.create_task(self.supervise(), name="supervisor"))
        deadline = time.monotonic() + timeout
        while not self.server.started:
            crashed = [t for t in self._tasks if t.done()]
            if crashed:
                await crashed[0]  # re-raises the failure (e.g. port in use)
                raise RuntimeError(f"{crashed[0].get_name()} stopped during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError(f"API did not start within {timeout}s")
            await asyncio.sleep(0.05)

    @property
    def failed_task(self) -> asyncio.Task[None] | None:
        return next((t for t in self._tasks if t.done()), None)

    def count_events(self, orgs: list[str]) -> int:
        rows = self.store.client().query(
            f"SELECT count() FROM {EVENTS_TABLE} FINAL WHERE org_id IN {{orgs:Array(String)}}",
            parameters={"orgs": orgs},
        ).result_rows
        return int(rows[0][0])

    async def load_demo(self, timeout: float = 90.0) -> tuple[int, bool]:
        """Publish the demo data unless this data directory has it; return (events stored, published now)."""
        assert self.producer is not None
        orgs = list(DEMO_ORGS)
        have = await asyncio.to_thread(self.count_events, orgs)
        if have:
            return have, False
        events = demo_events()
        await self.producer.send_many(events)
        deadline = time.monotonic() + timeout
        while (have := await asyncio.to_thread(self.count_events, orgs)) < len(events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {have} of {len(events)} demo events stored after {timeout}s")
            await asyncio.sleep(0.25)
        return have, True

    async def supervise(self) -> None:
        """Restart a broker part that died (on this, the main, thread: see :mod:`auditlogkit.server.broker`), forever."""
        while True:
            await asyncio.sleep(SUPERVISE_SECONDS)
            down = [k for k, v in self.broker.parts().items() if v != "ok"]
            if not down:
                continue
            log.error("stack.part_down", parts=down)
            try:
                self.broker.revive()  # spawns only: the next rounds see it up (or start the broker after it)
            except RuntimeError as exc:  # e.g. its port not free yet: next round
                log.error("stack.restart_failed", parts=down, error=str(exc))

    async def stop(self) -> None:
        """Stop everything within :data:`STOP_SECONDS` (module contract)."""
        deadline = time.monotonic() + STOP_SECONDS - 2.0  # the last 2 s: producers and the broker
        if self.server is not None:
            self.server.should_exit = True
        if self.worker is not None:
            self.worker.request_stop()
        if self.deliverer is not None:
            self.deliverer.request_stop()
        for t in self._tasks:
            if t.get_name() == "supervisor":
                t.cancel()
        for t in self._tasks:
            try:
                await asyncio.wait_for(asyncio.shield(t), timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("stack.task_cancelled", task=t.get_name(), reason="did not stop in time")
                t.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(t, timeout=1.0)
            except asyncio.CancelledError:
                if not t.cancelled():
                    raise
            except Exception as exc:
                log.error("stack.task_failed", task=t.get_name(), error=repr(exc))
        for producer in (self.producer, self.audit_producer):
            if producer is not None:
                try:
                    await asyncio.wait_for(producer.stop(), timeout=1.0)
                except (TimeoutError, Exception) as exc:
                    log.warning("stack.producer_stop_failed", error=repr(exc))
        await asyncio.to_thread(self.broker.stop, 1.0)
        log.info("stack.stopped")


def demo_tokens(secret: str, *, audience: str | None = None, issuer: str | None = None) -> dict[str, str]:
    """Ready-to-paste tokens for the demo principals (org owner of acme, also with ``audit:stream``; workspace admin
    of two workspaces), with ``aud`` / ``iss`` when given (``AUDITLOG_JWT_AUDIENCE`` / ``_ISSUER``: the API requires them then)."""
    from auditlogkit.query_api.security.auth import mint_token
    from auditlogkit.query_api.security.principal import EXPORT, READ, STREAM

    org, workspaces = DEMO_ADMIN_WORKSPACES
    ttl = 12 * 3600
    return {
        "owner": mint_token(secret, sub="u-ac-kim", email="kim@acme.example", org_id=org, role="org_owner",
                            permissions=(READ, EXPORT, STREAM), audience=audience, issuer=issuer, ttl_seconds=ttl),
        "admin": mint_token(secret, sub="u-ac-lee", email="lee@acme.example", org_id=org, role="workspace_admin",
                            workspaces=list(workspaces), audience=audience, issuer=issuer, ttl_seconds=ttl),
    }
