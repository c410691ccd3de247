"""The deliverer: runs the delivery of the streams it holds leases for (``auditlog stream``, and inside ``auditlog
up``); any number of deliverers share the streams of one store.

Contract of :class:`Deliverer`:
- every cycle (a fifth of ``streams_lease_seconds``) it reads the streams, renews its leases, answers the roll-call
  and takes its share: ``ceil(streams / deliverers present)`` of the active streams (whose secrets open with its
  key), claiming free leases (:class:`~auditlogkit.query_api.streams.leases.Leases`) and starting a
  :class:`~auditlogkit.query_api.streams.worker.StreamWorker` for each; above its share it lets streams go (after their batch
  in flight), so a deliverer that joins gets streams; a paused or deleted stream's worker ends (after its batch),
  a changed stream's worker uses the new configuration from its next batch;
- a lease it could not renew is gone: that worker stops sending at once (its sends end by the lease's deadline);
  a worker that ended is reaped by the next cycle, which releases its lease;
- :meth:`Deliverer.request_stop` ends :meth:`Deliverer.run` after every batch in flight is delivered or has failed
  (positions saved), then releases the leases and leaves the roll-call;
- :func:`send_test` sends one synthetic event (not stored) to a stream's destination and returns the reply: the
  HTTP API's ``POST /v1/streams/{id}/test``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

from auditlogkit.query_api.read.event_shape import STORED
from auditlogkit.query_api.read.events import public_row
from auditlogkit.query_api.streams.destinations import destination
from auditlogkit.query_api.streams.destinations.base import Context, Outcome, failed
from auditlogkit.query_api.streams.ssrf import Resolver, system_resolver
from auditlogkit.query_api.streams.store import StreamStore
from auditlogkit.query_api.streams.worker import StreamWorker, Tuning
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.server.logs import get_logger
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store

log = get_logger("auditlogkit.query_api.streams.deliverer")


def tuning_of(settings: Settings) -> Tuning:
    return Tuning(settings.streams_batch_max_events, settings.streams_batch_seconds,
                  settings.streams_backoff_max_seconds, settings.streams_request_timeout_seconds)


class Deliverer:
    """The runner (module contract)."""

    def __init__(self, repo: StreamStore, tuning: Tuning, *, holder: str | None = None,
                 resolver: Resolver = system_resolver) -> None:
        self.repo = repo
        self.leases = repo.leases
        self.tuning = tuning
        self.resolver = resolver
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.period = max(0.2, self.leases.seconds / 5)
        self.workers: dict[str, StreamWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()

    @classmethod
    def from_settings(cls, store: Store, settings: Settings, catalog: Catalog, key: bytes, *,
                      holder: str | None = None, resolver: Resolver = system_resolver) -> Deliverer:
        repo = StreamStore.from_settings(store, settings, catalog, key, resolver=resolver)
        return cls(repo, tuning_of(settings), holder=holder, resolver=resolver)

    @property
    def held(self) -> set[str]:
        """The streams this deliverer is delivering now."""
        return {sid for sid, w in self.workers.items() if w.lease is not None and not self._tasks[sid].done()}

    def request_stop(self) -> None:
        self._stop.set()

    def stored(self, rows: int = 0) -> None:
        """New events were stored (the consumer in the same process says so after each insert): the caught-up
        streams read again without waiting out their pause. Call on this deliverer's event loop."""
        self.repo.stored_end.stored()
        for w in self.workers.values():
            w.wake()

    async def run(self) -> None:
        log.info("deliverer.started", holder=self.holder, lease_s=self.leases.seconds)
        try:
            while not self._stop.is_set():
                try:
                    await self.cycle()
                except Exception as exc:  # the store may be briefly unreachable: the next cycle tries again
                    log.warning("deliverer.cycle_failed", holder=self.holder, error=repr(exc)[:300])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=self.period)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        for w in self.workers.values():
            w.request_stop()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self._reap()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.leases.present, self.holder, True)
        log.info("deliverer.stopped", holder=self.holder)

    async def _reap(self) -> None:
        """Forget the workers that ended, releasing the leases they still hold."""
        for sid in [sid for sid, t in self._tasks.items() if t.done()]:
            task, worker = self._tasks.pop(sid), self.workers.pop(sid)
            if not task.cancelled() and task.exception() is not None:
                log.error("stream.worker_failed", stream=sid, error=repr(task.exception())[:300])
            if worker.lease is not None:
                try:
                    await asyncio.to_thread(self.leases.release, worker.lease)
                except Exception as exc:  # it expires by itself
                    log.warning("stream.release_failed", stream=sid, error=repr(exc)[:300])

    async def cycle(self) -> None:
        """One round: streams, leases, roll-call, share (module contract)."""
        streams = await asyncio.to_thread(self.repo.list_all)
        wanted = {s.id: s for s in streams if s.state == "active" and not s.secrets_error and s.delivery is not None}
        live = [w.lease for w in self.workers.values() if w.lease is not None and not w.stopping]
        for sid, lease in (await asyncio.to_thread(self.leases.renew_all, live)).items():
            self.workers[sid].lease = lease
            if lease is None:
                log.warning("stream.lease_lost", stream=sid, holder=self.holder)
                self.workers[sid].request_stop()
        await self._reap()
        for sid, w in self.workers.items():
            if sid in wanted:
                w.stream = wanted[sid]
            elif not w.stopping:
                log.info("stream.released", stream=sid, reason="paused or deleted")
                w.request_stop()
        await asyncio.to_thread(self.leases.present, self.holder)
        members = set(await asyncio.to_thread(self.leases.members)) | {self.holder}
        share = math.ceil(len(wanted) / len(members))
        mine = sorted(sid for sid, w in self.workers.items() if not w.stopping)
        for sid in mine[share:]:
            log.info("stream.released", stream=sid, reason="share", deliverers=len(members))
            self.workers[sid].request_stop()
        if len(mine) >= share or self._stop.is_set():
            return
        current = await asyncio.to_thread(self.leases.current, list(wanted))
        free = [sid for sid in wanted if sid not in self.workers and not (sid in current and current[sid].live)]
        random.shuffle(free)
        for sid in free[: share - len(mine)]:
            lease = await asyncio.to_thread(self.leases.try_lease, sid, self.holder)
            if lease is None:
                continue
            worker = StreamWorker(wanted[sid], lease, self.repo, self.tuning, resolver=self.resolver)
            self.workers[sid] = worker
            self._tasks[sid] = asyncio.create_task(worker.run(), name=f"stream-{sid}")
            log.info("stream.leased", stream=sid, org_id=wanted[sid].org_id, term=lease.term, holder=self.holder)


# ----- the owner's test send ------------------------------------------------------------------------------------
def test_event(org_id: str, catalog: Catalog) -> dict[str, Any]:
    """A synthetic event of ``org_id`` in the list's shape (never stored)."""
    now = datetime.now(UTC)
    row: dict[str, Any] = {f.flat: None for f in STORED}
    row.update(schema_version=1, event_id=uuid.uuid4(), occurred_at=now, received_at=now, org_id=org_id,
               scope="organization", category="audit_log", action="audit_log.stream_test", status="SUCCESS",
               actor_id="auditlog", actor_type="system", description="Test event of a log stream (not stored)",
               detail='{"test": true}', source="auditlog", publisher_via="api")
    return public_row(row, catalog)


async def send_test(repo: StreamStore, stream_id: str, org_id: str, *, timeout: float = 10.0,
                    resolver: Resolver = system_resolver) -> Outcome | None:
    """Send one synthetic event to the stream's destination; its outcome (None: no such stream of ``org_id``)."""
    stream = await asyncio.to_thread(repo.get, org_id, stream_id)
    if stream is None:
        return None
    ctx = Context(stream.id, stream.org_id, uuid.uuid4().hex, stream.destination.fields, stream.destination.secrets,
                  timeout=timeout, allow=repo.allow, resolver=resolver, received_at=datetime.now(UTC), test=True)
    try:
        async with asyncio.timeout(timeout):
            return await destination(stream.destination.type).send([test_event(stream.org_id, repo.catalog)], ctx)
    except TimeoutError:
        return failed(f"no reply within {timeout:g} s")
