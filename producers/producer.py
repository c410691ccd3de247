"""Publishing audit events: :class:`AuditProducer` (asyncio, aiokafka) and :class:`AuditProducerSync`.

Contract:
- :meth:`AuditProducer.send` validates the event against the v1 contract and the catalog *before* anything is
  sent and raises :class:`InvalidEvent` (a ``ValueError`` naming the field and rule) if it is broken;
- messages are JSON (EVENT.md wire form), keyed by ``org_id`` (all of a tenant's events keep their order in one
  partition), batched (``linger_ms``) and compressed (lz4 by default);
- ``send`` returns once the event is in the client's buffer and yields a future of its
  ``RecordMetadata``; ``send_and_wait`` waits for the broker's ack; :meth:`flush` waits for all;
- acks default to ``all``. The same ``event_id`` sent twice is one event downstream (the consumer dedups).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from schemas.catalog import RESERVED_REASON, Catalog, get_catalog, is_reserved
from schemas.event import AuditEvent, EventError, parse_event

T = TypeVar("T")


class InvalidEvent(EventError):
    """The event was not sent because it breaks the contract."""


def new_event_id() -> str:
    return str(uuid.uuid4())


def coerce_event(event: AuditEvent | Mapping[str, Any], catalog: Catalog, *, reserved: bool = False) -> AuditEvent:
    """Validate a mapping (filling ``event_id`` and ``occurred_at`` when absent) or re-check a model. The reserved
    category (who read the audit log) only with ``reserved`` (the API's self-audit, whose messages are signed)."""
    if isinstance(event, AuditEvent):
        data: dict[str, Any] = event.model_dump(mode="json")
    else:
        data = dict(event)
        data.setdefault("event_id", new_event_id())
        data.setdefault("occurred_at", datetime.now(UTC).isoformat())
    try:
        ev = parse_event(data, catalog)
    except EventError as exc:
        raise InvalidEvent(exc.field, exc.reason) from None
    if not reserved and is_reserved(ev.scope, ev.category):
        raise InvalidEvent("category", RESERVED_REASON)
    return ev


class AuditProducer:
    """Async producer of audit events. Use ``async with AuditProducer(...) as p: await p.send(event)``."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = "audit.events",
        *,
        catalog: Catalog | None = None,
        linger_ms: int = 5,
        compression_type: str | None = "lz4",
        acks: int | str = "all",
        max_batch_size: int = 512 * 1024,
        **kafka_kwargs: Any,
    ) -> None:
        self.topic = topic
        self.catalog = catalog or get_catalog()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            linger_ms=linger_ms,
            compression_type=compression_type,
            acks=acks,
            max_batch_size=max_batch_size,
            max_request_size=2 * 1024 * 1024,
            **kafka_kwargs,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> AuditProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(self, event: AuditEvent | Mapping[str, Any], *,
                   sign: Callable[[bytes], list[tuple[str, bytes]]] | None = None) -> asyncio.Future[RecordMetadata]:
        """Validate and enqueue one event; returns the future of its broker ack. ``sign`` (the API's self-audit)
        returns the headers for the message's bytes; only a signed message may carry the reserved category."""
        ev = coerce_event(event, self.catalog, reserved=sign is not None)
        value = ev.to_json_bytes()
        return await self.send_raw(value, ev.org_id, sign(value) if sign is not None else None)

    async def send_raw(
        self, value: bytes, key: str | bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> asyncio.Future[RecordMetadata]:
        """Enqueue already-encoded bytes unvalidated (replay of dead letters, tests of bad input)."""
        k = key.encode() if isinstance(key, str) else key
        return await self._producer.send(self.topic, value=value, key=k, headers=headers)

    async def send_and_wait(self, event: AuditEvent | Mapping[str, Any]) -> RecordMetadata:
        return await (await self.send(event))

    async def send_many(self, events: Iterable[AuditEvent | Mapping[str, Any]]) -> int:
        """Validate all, then send all and wait for every ack. Raises before sending anything if one is bad."""
        checked = [coerce_event(e, self.catalog) for e in events]
        futures = [await self.send_raw(e.to_json_bytes(), e.org_id) for e in checked]
        if futures:
            await asyncio.gather(*futures)
        return len(futures)

    async def flush(self) -> None:
        await self._producer.flush()

    def connected(self) -> bool:
        """True while a connection to a broker is open (no request made; a dead broker's socket closes)."""
        conns = getattr(self._producer.client, "_conns", {})
        return any(c.connected() for c in conns.values())

    async def reachable(self) -> None:
        """Returns once a broker answered a metadata request; raises ``KafkaError`` when none does."""
        await self._producer.client.fetch_all_metadata()


class AuditProducerSync:
    """A blocking facade for non-async services: runs an :class:`AuditProducer` on a private event loop thread.

    ``send`` validates in the caller's thread (errors raise immediately) and returns a
    ``concurrent.futures.Future`` of the ack; ``close`` flushes and stops.
    """

    def __init__(self, bootstrap_servers: str, topic: str = "audit.events", **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="audit-producer", daemon=True)
        self._thread.start()
        self._producer: AuditProducer = self._call(self._make(bootstrap_servers, topic, kwargs))
        self._call(self._producer.start())

    @staticmethod
    async def _make(bootstrap: str, topic: str, kwargs: dict[str, Any]) -> AuditProducer:
        return AuditProducer(bootstrap, topic, **kwargs)  # aiokafka must be built inside the loop

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def send(self, event: AuditEvent | Mapping[str, Any]) -> Future[RecordMetadata]:
        ev = coerce_event(event, self._producer.catalog)
        out: Future[RecordMetadata] = Future()

        async def go() -> None:
            try:
                fut = await self._producer.send_raw(ev.to_json_bytes(), ev.org_id)
                out.set_result(await fut)
            except Exception as exc:
                out.set_exception(exc)

        asyncio.run_coroutine_threadsafe(go(), self._loop)
        return out

    def send_and_wait(self, event: AuditEvent | Mapping[str, Any], timeout: float = 30) -> RecordMetadata:
        return self.send(event).result(timeout)

    def flush(self, timeout: float = 30) -> None:
        self._call(self._producer.flush(), timeout)

    def close(self, timeout: float = 30) -> None:
        try:
            self._call(self._producer.stop(), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> AuditProducerSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
