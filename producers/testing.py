"""An in-memory producer for a service's own tests: the real validation, no broker, no network.

``fake = FakeTransport(); audit = AuditProducer(transport=fake)`` (or :func:`fake_producer`) checks every event
exactly as in production (context, defaults, catalog, contract) and keeps what would have been delivered in
``fake.events`` (parsed :class:`~auditlogkit.schemas.event.AuditEvent` objects, in order). ``fake.fail_with`` makes deliveries
fail (to test a service's ``on_error``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from auditlogkit.producer import AuditProducer, OnError
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.schemas.event import AuditEvent, parse_event


class FakeTransport:
    """A :class:`~auditlogkit.transport.Transport` that keeps events instead of sending them."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.events: list[AuditEvent] = []
        self.fail_with: BaseException | None = None
        self.started = False
        self._catalog = catalog

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def flush(self) -> None:
        return None

    async def send(self, value: bytes, key: bytes | None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail_with is not None:
            fut.set_exception(self.fail_with)
        else:
            self.events.append(parse_event(value, self._catalog))
            fut.set_result(None)
        return fut

    def connected(self) -> bool:
        return self.started

    async def reachable(self) -> None:
        return None

    def actions(self) -> list[str]:
        return [e.action for e in self.events]


def fake_producer(*, catalog: Catalog | None = None, source: str | None = None,
                  on_error: OnError | None = None) -> tuple[AuditProducer, FakeTransport]:
    """An :class:`AuditProducer` over a :class:`FakeTransport`, and the transport."""
    fake = FakeTransport(catalog)
    return AuditProducer(transport=fake, catalog=catalog, source=source, on_error=on_error), fake
