"""Publishing audit events: :class:`AuditProducer` (asyncio) and :class:`AuditProducerSync` (threads).

Contract:
- :meth:`AuditProducer.send` fills what the event leaves out from the request context
  (:func:`auditlogkit.context.fill`: tenant, actor, address, user agent, request id, ``source``, ``status``, the
  catalog's place of the action), validates it against the v1 contract and the catalog *before* anything is sent,
  and raises :class:`InvalidEvent` (a ``ValueError`` naming the field and rule) if it is broken;
- the event goes out through one :class:`~auditlogkit.transport.Transport`: Kafka (JSON wire form, keyed by
  ``org_id``, batched, lz4, ``acks=all``) or the HTTP ingest (:mod:`auditlogkit.http`);
  :meth:`AuditProducer.from_env` chooses it from ``AUDITLOG_*`` (:class:`auditlogkit.settings.ProducerSettings`);
- ``send`` returns once the event is queued and yields a future that resolves when it is durable; a failure of
  that future is also handed to ``on_error(event, exc)`` (else logged), so a service that does not wait still
  hears of it; ``send_and_wait`` waits; :meth:`flush` waits for all;
- the same ``event_id`` sent twice is one event downstream (the consumer de-duplicates).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, TypeVar

from auditlogkit.context import fill
from auditlogkit.errors import DeliveryFailed, InvalidEvent
from auditlogkit.kafka import KafkaConnection, kafka_options
from auditlogkit.schemas.catalog import RESERVED_REASON, Catalog, get_catalog, is_reserved
from auditlogkit.schemas.event import AuditEvent, EventError, parse_event
from auditlogkit.settings import ProducerSettings
from auditlogkit.transport import KafkaTransport, Transport

T = TypeVar("T")
OnError = Callable[[AuditEvent, BaseException], None]
EventInput = AuditEvent | Mapping[str, Any]
log = logging.getLogger("auditlogkit.producer")

__all__ = ["AuditProducer", "AuditProducerSync", "DeliveryFailed", "InvalidEvent", "OnError", "coerce_event"]


def new_event_id() -> str:
    return str(uuid.uuid4())


def coerce_event(event: EventInput, catalog: Catalog, *, reserved: bool = False) -> AuditEvent:
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


def _report(ev: AuditEvent, on_error: OnError | None) -> Callable[[asyncio.Future[Any]], None]:
    def done(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is None:
            return
        exc = fut.exception()
        assert exc is not None
        if on_error is None:
            log.warning("audit event %s not delivered: %s: %s", ev.event_id, type(exc).__name__, exc)
            return
        try:
            on_error(ev, exc)
        except Exception:  # the service's callback must not break the producer
            log.exception("on_error raised for audit event %s", ev.event_id)

    return done


class AuditProducer:
    """Async producer of audit events: ``async with AuditProducer.from_env() as audit: await audit.send(...)``.

    ``AuditProducer("kafka:9092")`` publishes to Kafka (aiokafka's options as keyword arguments);
    ``transport=`` takes any :class:`~auditlogkit.transport.Transport` (HTTP, the in-memory fake of tests).
    """

    def __init__(self, bootstrap_servers: str | None = None, topic: str = "audit.events", *,
                 catalog: Catalog | None = None, transport: Transport | None = None, source: str | None = None,
                 on_error: OnError | None = None, linger_ms: int = 5, compression_type: str | None = "lz4",
                 acks: int | str = "all", max_batch_size: int = 512 * 1024, **kafka_kwargs: Any) -> None:
        if transport is None:
            if bootstrap_servers is None:
                raise ValueError("AuditProducer needs bootstrap_servers or a transport (or use from_env())")
            transport = KafkaTransport(bootstrap_servers, topic, linger_ms=linger_ms,
                                       compression_type=compression_type, acks=acks, max_batch_size=max_batch_size,
                                       **kafka_kwargs)
        self.topic = topic
        self.transport = transport
        self.catalog = catalog or get_catalog()
        self.source = source
        self.on_error = on_error

    @classmethod
    def from_env(cls, *, catalog: Catalog | None = None, on_error: OnError | None = None,
                 settings: ProducerSettings | None = None, **options: Any) -> AuditProducer:
        """A producer configured by ``AUDITLOG_*``: ``AUDITLOG_INGEST_URL`` + ``AUDITLOG_INGEST_TOKEN`` send over
        HTTP; otherwise Kafka at ``AUDITLOG_KAFKA_BOOTSTRAP`` with every ``AUDITLOG_KAFKA_*`` TLS/SASL setting, to
        ``AUDITLOG_TOPIC``. ``AUDITLOG_SOURCE`` names the service. ``options``: the transport's own."""
        s = settings or ProducerSettings()
        return cls(transport=_transport(s, options), topic=s.topic, catalog=catalog, source=s.source,
                   on_error=on_error)

    async def start(self) -> None:
        await self.transport.start()

    async def stop(self) -> None:
        await self.transport.stop()

    async def __aenter__(self) -> AuditProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def event(self, event: EventInput | None = None, /, **fields: Any) -> AuditEvent:
        """The checked event ``send`` would publish (context and defaults filled in); raises :class:`InvalidEvent`."""
        if isinstance(event, AuditEvent) and not fields:
            return coerce_event(event, self.catalog)
        data = {**(event.model_dump(mode="json") if isinstance(event, AuditEvent) else dict(event or {})), **fields}
        return coerce_event(fill(data, self.catalog, source=self.source), self.catalog)

    async def send(self, event: EventInput | None = None, /, *,
                   sign: Callable[[bytes], list[tuple[str, bytes]]] | None = None,
                   **fields: Any) -> asyncio.Future[Any]:
        """Fill, validate and enqueue one event (a mapping, an :class:`AuditEvent`, or fields as keywords:
        ``send(action="vm.delete", target={"type": "vm", "id": "vm-1"})``); returns the future of its delivery.
        ``sign`` (the API's self-audit) returns the headers for the message's bytes; only a signed message may
        carry the reserved category."""
        if sign is not None:
            ev = coerce_event(event if event is not None else fields, self.catalog, reserved=True)
        else:
            ev = self.event(event, **fields)
        value = ev.to_json_bytes()
        fut = await self.transport.send(value, ev.org_id.encode(), sign(value) if sign is not None else None)
        fut.add_done_callback(_report(ev, self.on_error))
        return fut

    async def send_raw(self, value: bytes, key: str | bytes | None,
                       headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        """Enqueue already-encoded bytes unvalidated (replay of dead letters, tests of bad input)."""
        return await self.transport.send(value, key.encode() if isinstance(key, str) else key, headers)

    async def send_and_wait(self, event: EventInput | None = None, /, **fields: Any) -> Any:
        return await (await self.send(event, **fields))

    async def send_many(self, events: Iterable[EventInput]) -> int:
        """Validate all, then send all and wait for every delivery. Raises before sending anything if one is bad."""
        checked = [self.event(e) for e in events]
        futures = []
        for ev in checked:
            fut = await self.transport.send(ev.to_json_bytes(), ev.org_id.encode())
            fut.add_done_callback(_report(ev, self.on_error))
            futures.append(fut)
        if futures:
            await asyncio.gather(*futures)
        return len(futures)

    async def flush(self) -> None:
        await self.transport.flush()

    def connected(self) -> bool:
        """True while the transport has a live connection (no request made)."""
        return self.transport.connected()

    async def reachable(self) -> None:
        """Returns once the broker (or the API) answered; raises otherwise."""
        await self.transport.reachable()


def _transport(s: ProducerSettings, options: dict[str, Any]) -> Transport:
    if s.transport == "http":
        from auditlogkit.http import HttpTransport

        assert s.ingest_url is not None and s.ingest_token is not None
        return HttpTransport(s.ingest_url, s.ingest_token.get_secret_value(), **options)
    return KafkaTransport(topic=s.topic, **kafka_options(KafkaConnection.from_settings(s)), **options)


class AuditProducerSync:
    """A blocking facade for non-async services (Django, Flask, scripts): an :class:`AuditProducer` on a private
    event-loop thread.

    ``send`` fills and validates in the caller's thread, with the caller's request context (errors raise at once)
    and returns a ``concurrent.futures.Future`` of the delivery; ``close`` delivers what is queued and stops. At
    interpreter exit a producer not closed is closed with a bounded wait (``exit_timeout_s``): queued events are
    delivered, or handed to ``on_error`` / logged, never dropped silently.
    """

    def __init__(self, bootstrap_servers: str | None = None, topic: str = "audit.events", *,
                 exit_timeout_s: float = 5.0, **kwargs: Any) -> None:
        self._start(lambda: AuditProducer(bootstrap_servers, topic, **kwargs), exit_timeout_s)

    @classmethod
    def from_env(cls, *, settings: ProducerSettings | None = None, **kwargs: Any) -> AuditProducerSync:
        """As :meth:`AuditProducer.from_env`; ``AUDITLOG_EXIT_TIMEOUT_SECONDS`` bounds the wait at exit."""
        s = settings or ProducerSettings()
        self = cls.__new__(cls)
        self._start(lambda: AuditProducer.from_env(settings=s, **kwargs), s.exit_timeout_seconds)
        return self

    def _start(self, make: Callable[[], AuditProducer], exit_timeout_s: float) -> None:
        self.exit_timeout_s = exit_timeout_s
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="audit-producer", daemon=True)
        self._thread.start()

        async def build() -> AuditProducer:
            return make()  # aiokafka and httpx must be built inside the loop

        try:
            self._producer: AuditProducer = self._call(build())
            self._call(self._producer.start())
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise
        atexit.register(self._at_exit)

    @property
    def producer(self) -> AuditProducer:
        return self._producer

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def send(self, event: EventInput | None = None, /, **fields: Any) -> Future[Any]:
        ev = self._producer.event(event, **fields)  # in the caller's thread: its context, its errors
        out: Future[Any] = Future()

        async def go() -> None:
            try:
                out.set_result(await (await self._producer.send(ev)))
            except BaseException as exc:
                out.set_exception(exc)

        asyncio.run_coroutine_threadsafe(go(), self._loop)
        return out

    def send_and_wait(self, event: EventInput | None = None, /, timeout: float = 30, **fields: Any) -> Any:
        return self.send(event, **fields).result(timeout)

    def flush(self, timeout: float = 30) -> None:
        self._call(self._producer.flush(), timeout)

    def close(self, timeout: float = 30) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        try:
            self._call(self._producer.stop(), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def _at_exit(self) -> None:
        try:
            self.close(self.exit_timeout_s)
        except Exception as exc:  # at exit: say what was not delivered, never raise
            log.error("audit producer closed at exit without delivering everything: %s: %s", type(exc).__name__, exc)

    def __enter__(self) -> AuditProducerSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
