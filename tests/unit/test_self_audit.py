"""Which list reads are one *view* (folded while the broker is healthy): view_key per caller, filters and period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from query_api.auth import Principal
from query_api.self_audit import view_key


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
    fixed = {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-02T00:00:00+00:00"}
    assert key(principal(), fixed) == key(principal(), dict(fixed))
    assert key(principal(), fixed) != key(principal(), {**fixed, "end": "2026-01-03T00:00:00+00:00"})
