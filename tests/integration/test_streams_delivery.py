"""Log-stream delivery end to end: a real chDB store with events on Kafka positions, the real deliverer, a real
HTTP receiver on loopback (allowed by AUDITLOG_STREAMS_ALLOW_HOSTS). In order and complete across a graceful
restart and a crash (at least once, nothing skipped), another org's events never, filters, signed batches with
one delivery id per batch, Retry-After honoured, a 4xx turning the stream failing until the destination recovers,
paused streams skipped, the send-time address check, and no secret in any log. A destination answering 503 for
10 s, and one refusing connections, lose nothing (the stream ``failing`` with the error meanwhile, then ``active``);
redirects are never followed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from auditlogkit.query_api.streams.destinations.webhook import verify
from auditlogkit.query_api.streams.store import StreamStore
from auditlogkit.server.broker import free_port
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.streams_helpers import (
    Received,
    Receiver,
    deliverer_for,
    put_events,
    repo_for,
    running,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)
SECRET = "whsec-0123456789-abcdef"


@pytest.fixture
def rx() -> Any:
    r = Receiver()
    yield r
    r.close()


def hook(rx: Receiver) -> dict[str, str]:
    return {"type": "webhook", "url": rx.url + "/hook", "secret": SECRET}


def first_seen(events: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(e["event_id"] for e in events))


async def test_in_order_and_complete_across_a_restart_and_a_crash(store: Store, tmp_path: Path, rx: Receiver) -> None:
    s = settings_for(store, tmp_path, streams_batch_max_events=40, streams_lease_seconds=2.0)
    repo = repo_for(store, s)
    stream = repo.create("acme", "all", hook(rx))
    acme: dict[int, list[str]] = {0: [], 1: []}

    def put(n: int) -> None:
        for p in (0, 1):
            mixed = [make_event(org_id="globex" if i % 3 == 0 else "acme") for i in range(n)]
            acme[p] += [eid for (_, _, eid), e in zip(put_events(store, mixed, p), mixed, strict=True)
                        if e["org_id"] == "acme"]

    put(90)
    async with running(deliverer_for(store, s, "A")):
        await wait_for(lambda: len(rx.events()) >= 50, what="a first part")
    graceful = len(rx.events())  # stopped after its batch in flight: everything sent was saved
    put(60)
    crashed = deliverer_for(store, s, "B")
    task = asyncio.create_task(crashed.run())
    await wait_for(lambda: len(rx.events()) >= graceful + 40, what="B's first batches")
    crashed._shutdown = lambda: asyncio.sleep(0)  # type: ignore[method-assign]  # a crash: no save, no release
    for t in [*crashed._tasks.values(), task]:
        t.cancel()
    await asyncio.gather(*crashed._tasks.values(), task, return_exceptions=True)
    put(30)
    total = sum(len(v) for v in acme.values())
    async with running(deliverer_for(store, s, "C")):
        await wait_for(lambda: len(set(first_seen(rx.events()))) >= total, timeout=15, what="everything")
    events = rx.events()
    assert {e["org_id"] for e in events} == {"acme"}
    seen = first_seen(events)
    assert sorted(seen) == sorted(acme[0] + acme[1])
    for p in (0, 1):  # each partition in offset order
        assert [eid for eid in seen if eid in set(acme[p])] == acme[p]
    assert len(events) - len(seen) <= 40  # at most the crashed deliverer's unacknowledged batch came twice
    assert len(events[:graceful]) == len(first_seen(events[:graceful]))
    final = repo.get("acme", stream.id)
    assert final is not None and final.status == "active" and final.delivery is not None
    assert len(seen) <= final.delivery.delivered <= len(events)  # a send cut by the crash is not counted
    assert repo.lag_seconds(final) == 0.0


async def test_filters_choose_the_events(store: Store, tmp_path: Path, rx: Receiver) -> None:
    s = settings_for(store, tmp_path)
    repo = repo_for(store, s)
    chosen = repo.create("acme", "vm deletes in ws-a", hook(rx),
                         {"scope": "service", "action": ["vm.delete"], "workspace_id": "ws-a", "status": "FAILED"})
    want = [make_event(workspace_id="ws-a", status="FAILED") for _ in range(3)]
    noise = [make_event(workspace_id="ws-b", status="FAILED"), make_event(workspace_id="ws-a"),
             make_event(workspace_id="ws-a", status="FAILED", org_id="globex"),
             make_event(workspace_id="ws-a", status="FAILED", action="vm.create")]
    put_events(store, [noise[0], want[0], noise[1], want[1], noise[2], noise[3], want[2]])
    async with running(deliverer_for(store, s, "A")):
        await wait_for(lambda: len(rx.events()) >= 3, what="the chosen events")
        await asyncio.sleep(0.5)
    assert [e["event_id"] for e in rx.events(chosen.id)] == [e["event_id"] for e in want]


async def test_signed_batches_keep_their_delivery_id_and_honour_retry_after(store: Store, tmp_path: Path) -> None:
    def respond(req: Received, n: int) -> tuple[int, dict[str, str], bytes]:
        return (429, {"Retry-After": "1"}, b"slow down") if n == 1 else (200, {}, b"ok")

    rx = Receiver(respond)
    try:
        s = settings_for(store, tmp_path, streams_backoff_max_seconds=5.0)
        repo = repo_for(store, s)
        stream = repo.create("acme", "signed", hook(rx))
        put_events(store, [make_event() for _ in range(5)])
        async with running(deliverer_for(store, s, "A")):
            await wait_for(lambda: len(rx.requests) >= 2, what="the retry")
            await wait_for(lambda: (x := repo.get("acme", stream.id)) is not None and x.delivery is not None
                           and x.delivery.delivered == 5, what="the saved delivery")
    finally:
        rx.close()
    first, second = rx.requests[:2]
    assert second.at - first.at >= 0.9  # Retry-After: 1
    assert first.body == second.body and len(first.lines()) == 5
    assert first.headers["x-auditlog-delivery"] == second.headers["x-auditlog-delivery"]
    assert first.headers["x-auditlog-stream"] == stream.id
    assert first.headers["content-type"] == "application/x-ndjson"
    for r in (first, second):
        assert verify(SECRET, r.body, r.headers["x-auditlog-signature"])
        assert not verify("another-secret-0123456789", r.body, r.headers["x-auditlog-signature"])
    done = repo.get("acme", stream.id)
    assert done is not None and done.status == "active" and done.delivery is not None
    assert done.delivery.last_error is not None and done.delivery.last_error["http_status"] == 429


async def test_a_4xx_turns_the_stream_failing_until_the_destination_recovers(store: Store, tmp_path: Path) -> None:
    healthy = {"yes": False}

    def respond(req: Received, n: int) -> tuple[int, dict[str, str], bytes]:
        return (200, {}, b"ok") if healthy["yes"] else (401, {}, b"bad credentials")

    rx = Receiver(respond)
    try:
        s = settings_for(store, tmp_path, streams_backoff_max_seconds=1.0)
        repo = repo_for(store, s)
        stream = repo.create("acme", "x", hook(rx))
        put_events(store, [make_event() for _ in range(4)])
        async with running(deliverer_for(store, s, "A")):
            await wait_for(lambda: (x := repo.get("acme", stream.id)) is not None and x.status == "failing",
                           what="failing")
            failing = repo.get("acme", stream.id)
            assert failing is not None and failing.delivery is not None and failing.delivery.last_error is not None
            assert failing.delivery.last_error["http_status"] == 401
            assert "bad credentials" in failing.delivery.last_error["message"] and failing.delivery.delivered == 0
            assert failing.public()["last_error"]["at"].endswith("Z")
            healthy["yes"] = True
            await wait_for(lambda: (x := repo.get("acme", stream.id)) is not None and x.status == "active",
                           what="active again")
    finally:
        rx.close()
    back = repo.get("acme", stream.id)
    assert back is not None and back.delivery is not None and back.delivery.delivered == 4
    assert len(first_seen(rx.ok()[0].lines())) == 4


async def test_paused_streams_are_skipped_until_resumed(store: Store, tmp_path: Path, rx: Receiver) -> None:
    s = settings_for(store, tmp_path)
    repo = repo_for(store, s)
    stream = repo.create("acme", "x", hook(rx))
    repo.update("acme", stream.id, state="paused")
    put_events(store, [make_event() for _ in range(3)])
    async with running(deliverer_for(store, s, "A")) as d:
        await asyncio.sleep(1.5)
        assert rx.requests == [] and d.held == set()
        repo.update("acme", stream.id, state="active")
        await wait_for(lambda: len(rx.events()) == 3, what="delivery after resume")


async def test_the_address_is_checked_again_at_send_time(store: Store, tmp_path: Path, rx: Receiver) -> None:
    names = {"hooks.test": ["127.0.0.1"]}
    s = settings_for(store, tmp_path)
    port = rx.url.rsplit(":", 1)[1]
    repo = repo_for(store, s, resolver=lambda h, p: names[h])
    stream = repo.create("acme", "x", {"type": "webhook", "url": f"http://hooks.test:{port}/h", "secret": SECRET})
    put_events(store, [make_event()])
    async with running(deliverer_for(store, s, "A", resolver=lambda h, p: names[h])):
        await wait_for(lambda: len(rx.requests) == 1, what="the first delivery")  # to the checked address
        assert rx.requests[0].headers["host"] == f"hooks.test:{port}"
        names["hooks.test"] = ["10.0.0.5"]  # the name now points into the private network
        put_events(store, [make_event()])
        await wait_for(lambda: (x := repo.get("acme", stream.id)) is not None and x.status == "failing",
                       what="the refusal")
    refused = repo.get("acme", stream.id)
    assert refused is not None and refused.delivery is not None and refused.delivery.last_error is not None
    assert "10.0.0.5" in refused.delivery.last_error["message"] and len(rx.requests) == 1


async def test_no_secret_reaches_a_log_or_the_last_error(store: Store, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    token = "hec-token-5555-6666-7777"

    def echo(req: Received, n: int) -> tuple[int, dict[str, str], bytes]:
        return 400, {}, f"rejected: {req.headers.get('authorization')}".encode()

    rx = Receiver(echo)
    try:
        s = settings_for(store, tmp_path)
        repo = repo_for(store, s)
        with capture_logs() as logs, caplog.at_level(logging.DEBUG):
            hec = repo.create("acme", "hec", {"type": "splunk_hec", "url": rx.url, "token": token})
            repo.create("acme", "wh", hook(rx))
            put_events(store, [make_event()])
            async with running(deliverer_for(store, s, "A")):
                await wait_for(lambda: (x := repo.get("acme", hec.id)) is not None and x.status == "failing",
                               what="failing")
    finally:
        rx.close()
    assert any(e["event"] == "stream.delivery_failed" for e in logs)
    text = repr(logs) + caplog.text + repr(repo.get("acme", hec.id))
    assert token not in text and "5555-6666" not in text and SECRET not in text
    failed = repo.get("acme", hec.id)
    assert failed is not None and failed.delivery is not None and failed.delivery.last_error is not None
    assert "••••7777" in failed.delivery.last_error["message"]


# ----- outages: a destination down for a while loses nothing; the stream shows it ---------------------------------
OUTAGE_S = 10.0  # the acceptance's "answering 503 for 10 s"
REFUSED_S = 5.0
Sample = tuple[float, str, int | None]


async def watch(repo: StreamStore, stream_id: str, done: Callable[[], bool], samples: list[Sample],
                timeout: float) -> None:
    """Sample the stream's (time, state, last_error.http_status) as the API shows them until ``done()`` holds and
    the stream shows ``active``."""
    deadline = time.monotonic() + timeout
    while True:
        shown = repo.get("acme", stream_id)
        assert shown is not None
        public = shown.public()
        samples.append((time.monotonic(), public["state"], (public["last_error"] or {}).get("http_status")))
        if done() and public["state"] == "active":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not delivered and active after {timeout:g} s: {samples[-3:]}")
        await asyncio.sleep(0.2)


def mixed_events(n: int) -> tuple[list[dict[str, Any]], list[str]]:
    """``n`` events, every third of another org; and the ids of acme's, in order."""
    events = [make_event(org_id="globex" if i % 3 == 0 else "acme") for i in range(n)]
    return events, [e["event_id"] for e in events if e["org_id"] == "acme"]


@pytest.mark.timeout(40)
async def test_a_destination_answering_503_for_10_s_loses_nothing(store: Store, tmp_path: Path) -> None:
    down_until: list[float] = []  # set by the first request: 503 for OUTAGE_S from then on, then 200

    def respond(req: Received, n: int) -> tuple[int, dict[str, str], bytes]:
        if not down_until:
            down_until.append(req.at + OUTAGE_S)
        return (503, {}, b"upstream unavailable") if req.at < down_until[0] else (200, {}, b"ok")

    rx = Receiver(respond)
    try:
        s = settings_for(store, tmp_path, streams_batch_max_events=10, streams_backoff_max_seconds=1.0)
        repo = repo_for(store, s)
        stream = repo.create("acme", "x", hook(rx))
        before, want = mixed_events(30)
        put_events(store, before)
        samples: list[Sample] = []
        async with running(deliverer_for(store, s, "A")):
            await wait_for(lambda: len(rx.requests) >= 1, what="the first send")
            during, more = mixed_events(30)  # stored while the destination is down
            put_events(store, during)
            want += more
            await watch(repo, stream.id, lambda: [e["event_id"] for r in rx.ok() for e in r.lines()] == want,
                        samples, timeout=OUTAGE_S + 15)
    finally:
        rx.close()
    end = down_until[0]
    refused = [r for r in rx.requests if r.status == 503]
    delivered = [e for r in rx.ok() for e in r.lines()]
    assert [e["event_id"] for e in delivered] == want  # each once, in the store's order
    assert {e["org_id"] for e in rx.events()} == {"acme"}
    assert len(refused) >= 6  # retried all along the outage (backoff at most 1 s) ...
    assert end - refused[-1].at < 1.5  # ... until its end
    assert {r.body for r in refused} == {refused[0].body}  # the same batch each time, nothing skipped
    assert rx.ok()[0].at - end < 1.5 and rx.ok()[0].body == refused[0].body
    failing = [(t, code) for t, state, code in samples if state == "failing"]
    assert failing and failing[0][0] < end - 5  # failing while it failed, with the 503 ...
    assert {code for t, code in failing} == {503}
    assert all(state == "failing" for t, state, _ in samples if failing[0][0] <= t < end)  # ... throughout
    assert samples[-1][1] == "active"  # then active
    final = repo.get("acme", stream.id)
    assert final is not None and final.delivery is not None and final.delivery.delivered == len(want)
    assert final.delivery.last_error is not None and "HTTP 503" in final.delivery.last_error["message"]
    assert repo.lag_seconds(final) == 0.0


@pytest.mark.timeout(40)
async def test_a_destination_refusing_connections_loses_nothing(store: Store, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there until the receiver starts
    s = settings_for(store, tmp_path, streams_batch_max_events=10, streams_backoff_max_seconds=1.0)
    repo = repo_for(store, s)
    stream = repo.create("acme", "x", {"type": "webhook", "url": f"http://127.0.0.1:{port}/hook", "secret": SECRET})
    before, want = mixed_events(30)
    put_events(store, before)
    rx: Receiver | None = None
    samples: list[Sample] = []
    try:
        with capture_logs() as logs:
            async with running(deliverer_for(store, s, "A")):
                t0 = time.monotonic()
                await wait_for(lambda: (x := repo.get("acme", stream.id)) is not None and x.status == "failing",
                               what="failing")
                during, more = mixed_events(30)
                put_events(store, during)
                want += more
                shown = repo.get("acme", stream.id)
                assert shown is not None
                error = shown.public()["last_error"]
                assert error is not None and error["http_status"] is None
                assert f"cannot connect to 127.0.0.1:{port}" in error["message"], error
                while time.monotonic() - t0 < REFUSED_S:
                    x = repo.get("acme", stream.id)
                    assert x is not None and x.status == "failing" and x.delivery is not None
                    assert x.delivery.delivered == 0
                    await asyncio.sleep(0.2)
                rx = Receiver(port=port)  # the destination comes back on its address
                opened = time.monotonic()
                r = rx
                await watch(repo, stream.id, lambda: [e["event_id"] for e in r.events()] == want, samples,
                            timeout=15)
    finally:
        if rx is not None:
            rx.close()
    failures = [e for e in logs if e["event"] == "stream.delivery_failed"]
    assert len(failures) >= 4 and all(e["retryable"] for e in failures)  # retried all along (backoff <= 1 s)
    assert rx.requests[0].at - opened < 1.5
    assert [e["event_id"] for e in rx.events()] == want  # each once, in order, nothing of another org
    assert samples[-1][1] == "active"
    final = repo.get("acme", stream.id)
    assert final is not None and final.delivery is not None and final.delivery.delivered == len(want)
    assert repo.lag_seconds(final) == 0.0


# ----- redirects are never followed ---------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [302, 307])
async def test_redirects_are_not_followed(store: Store, tmp_path: Path, rx: Receiver, code: int) -> None:
    redirector = Receiver(lambda r, n: (code, {"Location": rx.url + "/hook"}, b"moved"))
    try:
        s = settings_for(store, tmp_path, streams_backoff_max_seconds=0.5)
        repo = repo_for(store, s)
        stream = repo.create("acme", "x", hook(redirector))
        put_events(store, [make_event() for _ in range(3)])
        async with running(deliverer_for(store, s, "A")):
            await wait_for(lambda: len(redirector.requests) >= 3, what="retries of the redirected batch")
            await wait_for(lambda: (x := repo.get("acme", stream.id)) is not None and x.status == "failing",
                           what="failing")
    finally:
        redirector.close()
    assert rx.requests == []  # the Location was never visited
    assert len({r.headers["x-auditlog-delivery"] for r in redirector.requests}) == 1  # the same batch, not delivered
    shown = repo.get("acme", stream.id)
    assert shown is not None and shown.delivery is not None and shown.delivery.delivered == 0
    error = shown.public()["last_error"]
    assert error["http_status"] == code and "redirects are not followed" in error["message"]
    assert repo.lag_seconds(shown) > 0


async def test_a_wake_after_an_insert_cuts_a_caught_up_streams_pause(store: Store, tmp_path: Path,
                                                                       rx: Receiver) -> None:
    """In ``up`` the consumer tells the deliverer after each insert (``Deliverer.stored``): a caught-up stream reads
    again within a quarter of its pause instead of waiting all of it."""
    import time

    s = settings_for(store, tmp_path, streams_batch_seconds=8.0)
    repo = repo_for(store, s)
    repo.create("acme", "all", hook(rx))
    d = deliverer_for(store, s, "A")
    async with running(d):
        await wait_for(lambda: len(d.held) == 1, what="the stream's worker")
        await asyncio.sleep(0.5)  # it read once (nothing) and pauses for 8 s
        put_events(store, [make_event() for _ in range(3)])
        t0 = time.monotonic()
        d.stored(3)
        await wait_for(lambda: len(rx.events()) >= 3, timeout=6, what="the events after the wake")
        woken = time.monotonic() - t0
        put_events(store, [make_event() for _ in range(2)])  # no wake: the full pause
        t1 = time.monotonic()
        await wait_for(lambda: len(rx.events()) >= 5, timeout=12, what="the events after the pause")
        paused = time.monotonic() - t1
    assert woken < 3.5 and paused > 4.0, (woken, paused)
