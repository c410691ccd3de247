"""Several deliverers on one store share the streams through leases: no stream is ever sent by two at once (the
receiver counts requests in flight per stream), each takes a share, and when one stops the others take its
streams over without losing or repeating an event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.streams_helpers import (
    Receiver,
    deliverer_for,
    put_events,
    repo_for,
    running,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


async def test_two_deliverers_share_streams_and_never_send_one_at_once(store: Store, tmp_path: Path) -> None:
    rx = Receiver(delay=0.05)
    try:
        s = settings_for(store, tmp_path, streams_lease_seconds=2.0, streams_batch_max_events=5)
        repo = repo_for(store, s)
        streams = [repo.create("acme", f"s{i}", {"type": "webhook", "url": f"{rx.url}/{i}",
                                                  "secret": "whsec-0123456789-abcdef"}) for i in range(4)]
        ids: list[str] = []
        a, b = deliverer_for(store, s, "A"), deliverer_for(store, s, "B")
        async with running(a), running(b):
            for _ in range(6):
                ids += [eid for _, _, eid in put_events(store, [make_event() for _ in range(10)])]
                await asyncio.sleep(0.3)
            await wait_for(lambda: bool(a.held and b.held) and len(a.held | b.held) == 4, what="a share each")
            assert not a.held & b.held
            await wait_for(lambda: all(len(rx.events(x.id)) >= len(ids) for x in streams), what="all delivered")
            a.request_stop()  # B takes A's streams over
            await wait_for(lambda: len(b.held) == 4, timeout=10, what="the take-over")
            more = [eid for _, _, eid in put_events(store, [make_event() for _ in range(10)])]
            await wait_for(lambda: all(len(rx.events(x.id)) >= len(ids) + 10 for x in streams), what="after it")
    finally:
        rx.close()
    assert all(n == 1 for n in rx.max_in_flight.values()) and len(rx.max_in_flight) == 4
    for x in streams:
        assert [e["event_id"] for e in rx.events(x.id)] == ids + more  # in order, each once
