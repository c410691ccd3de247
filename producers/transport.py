"""Where a producer's encoded events go: a :class:`Transport` (module contract).

A transport takes one validated event's wire bytes and its key (the ``org_id``) and returns an ``asyncio.Future``
that resolves once the event is durable where it went (Kafka: the broker's ack; HTTP: the API's ``202``, itself
given after the broker's ack) or fails with the reason. ``start``/``stop``/``flush`` bracket its life; ``stop``
delivers what it holds first. :class:`KafkaTransport` is aiokafka's producer; :mod:`auditlogkit.http` sends to
``POST /v1/ingest``; :mod:`auditlogkit.testing` keeps events in memory.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer


class Transport(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def flush(self) -> None: ...

    async def send(self, value: bytes, key: bytes | None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]: ...

    def connected(self) -> bool: ...

    async def reachable(self) -> None: ...


class KafkaTransport:
    """aiokafka's producer on ``topic`` (acks, batching and compression as given)."""

    def __init__(self, bootstrap_servers: str, topic: str = "audit.events", *, linger_ms: int = 5,
                 compression_type: str | None = "lz4", acks: int | str = "all", max_batch_size: int = 512 * 1024,
                 **kafka_kwargs: Any) -> None:
        self.topic = topic
        self._options = dict(bootstrap_servers=bootstrap_servers, linger_ms=linger_ms,
                             compression_type=compression_type, acks=acks, max_batch_size=max_batch_size,
                             max_request_size=2 * 1024 * 1024, **kafka_kwargs)
        self._producer: AIOKafkaProducer | None = None
        try:  # aiokafka binds to the running loop: built now inside one, else by start() (e.g. at import time)
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._producer = AIOKafkaProducer(**self._options)

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the producer is not started (use `async with` or start())")
        return self._producer

    async def start(self) -> None:
        if self._producer is None:
            self._producer = AIOKafkaProducer(**self._options)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def flush(self) -> None:
        await self.producer.flush()

    async def send(self, value: bytes, key: bytes | None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        return await self.producer.send(self.topic, value=value, key=key, headers=headers)

    def connected(self) -> bool:
        """True while a connection to a broker is open (no request made; a dead broker's socket closes)."""
        conns = getattr(self._producer.client, "_conns", {}) if self._producer is not None else {}
        return any(c.connected() for c in conns.values())

    async def reachable(self) -> None:
        """Returns once a broker answered a metadata request; raises ``KafkaError`` when none does."""
        await self.producer.client.fetch_all_metadata()
