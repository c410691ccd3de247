"""Which list reads are one *view* (view_key per caller, filters and period), and when repeats of one are folded:
only for the same caller, IP and user agent, and only while the broker answers."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from starlette.requests import Request

from auditlogkit.producer import AuditProducer
from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.security.principal import Principal
from auditlogkit.query_api.security.self_audit import ReadAuditor, SelfAuditState, view_key


def principal(sub: str = "u1", org: str = "acme") -> Principal:
    return Principal(sub=sub, email=f"{sub}@x.example", org_id=org, role="org_owner",
                     permissions=frozenset({"audit:read"}))


def live(hours: float, **f: object) -> dict[str, object]:
    now = datetime.now(UTC)
    return {"start": (now - timedelta(hours=hours)).isoformat(), "end": now.isoformat(), **f}


def key(p: Principal, f: dict[str, object]) -> str:
    return view_key(p, f, datetime.now(UTC))


def test_repeats_of_a_live_view_are_one_view() -> None:
    first = key(principal(), live(24, scope="service"))
    assert key(principal(), live(24, scope="service")) == first  # auto-refresh: the period moved, same view


def test_another_filter_caller_org_or_period_is_another_view() -> None:
    base = key(principal(), live(24))
    others = [key(principal(), live(24, q="vm")), key(principal(), live(168)), key(principal("u2"), live(24)),
              key(principal(org="globex"), live(24))]
    assert base not in others and len(set(others)) == len(others)
    fixed: dict[str, object] = {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-02T00:00:00+00:00"}
    assert key(principal(), fixed) == key(principal(), dict(fixed))
    assert key(principal(), fixed) != key(principal(), {**fixed, "end": "2026-01-03T00:00:00+00:00"})


# ----- folding: only the same caller, IP and user agent, and only while the broker answers --------------------
class FakeProducer:
    """Acks at once, or (``frozen``) never answers: an ack or a metadata request waits forever."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.frozen = False

    async def send(self, event: dict[str, Any], **_: Any) -> asyncio.Future[None]:
        self.sent.append(event)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.frozen:
            ack.set_result(None)
        return ack

    def connected(self) -> bool:
        return True  # a frozen broker's socket stays open

    async def reachable(self) -> None:
        if self.frozen:
            await asyncio.Event().wait()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(ip: str = "10.0.0.1", ua: str = "Mozilla/5.0 page") -> Request:
    return Request({"type": "http", "method": "GET", "path": "/v1/events", "query_string": b"",
                    "client": (ip, 40000), "headers": [(b"user-agent", ua.encode())]})


def auditor() -> tuple[ReadAuditor, FakeProducer, Clock]:
    producer, clock = FakeProducer(), Clock()
    return ReadAuditor(cast(AuditProducer, producer), ack_timeout_s=0.3, clock=clock), producer, clock


async def test_reads_from_another_ip_or_user_agent_are_recorded_not_folded_into_the_first() -> None:
    a, producer, _ = auditor()
    f = live(24)
    for ip, ua in [("10.0.0.1", "ua-1"), ("10.0.0.2", "ua-1"), ("10.0.0.1", "ua-2"), ("10.0.0.1", "ua-1")]:
        await a.record_list(request(ip, ua), principal(), f, 3, page=False)
    assert [(e["actor"]["ip"], e["actor"]["user_agent"]) for e in producer.sent] == [
        ("10.0.0.1", "ua-1"), ("10.0.0.2", "ua-1"), ("10.0.0.1", "ua-2")]  # the 4th repeats the 1st: folded
    assert await a.flush_coalesced(everything=True) == 1
    folded = producer.sent[-1]
    assert (folded["actor"]["ip"], folded["actor"]["user_agent"], folded["detail"]["coalesced"]) == (
        "10.0.0.1", "ua-1", 1)


async def test_a_repeat_folds_while_acks_are_fresh_and_after_the_broker_answered_a_probe() -> None:
    a, producer, clock = auditor()
    await a.record_list(request(), principal(), live(24), 3, page=False)
    clock.now += 0.1
    await a.record_list(request(), principal(), live(24), 3, page=False)  # the last ack is fresh
    clock.now += 30
    await a.record_list(request(), principal(), live(24), 3, page=False)  # stale: the broker answered a probe
    assert len(producer.sent) == 1
    assert await a.flush_coalesced(everything=True) == 1 and producer.sent[-1]["detail"]["coalesced"] == 2


async def test_a_repeat_is_refused_within_the_ack_timeout_once_the_broker_stopped_answering() -> None:
    a, producer, clock = auditor()
    await a.record_list(request(), principal(), live(24), 3, page=False)
    producer.frozen = True  # e.g. SIGSTOPped: its socket stays open, nothing answers
    clock.now += 5
    t0 = time.monotonic()
    with pytest.raises(ApiError) as refused:
        await a.record_list(request(), principal(), live(24), 3, page=False)
    assert refused.value.status == 503 and refused.value.code == "audit_unavailable"
    assert time.monotonic() - t0 < 1.0
    assert a.state == SelfAuditState.FAILING
    with pytest.raises(ApiError):  # and so is every other read, folded or not
        await a.record_list(request(), principal(), live(24), 3, page=False)
