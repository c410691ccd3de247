"""Which list reads are recorded: ReadCoalescer folds repeats of one view by one caller within the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from query_api.auth import Principal
from query_api.self_audit import ReadCoalescer


def principal(sub: str = "u1", org: str = "acme") -> Principal:
    return Principal(sub=sub, email=f"{sub}@x.example", org_id=org, role="org_owner",
                     permissions=frozenset({"audit:read"}))


def live(hours: float, **f: object) -> dict[str, object]:
    now = datetime.now(UTC)
    return {"start": (now - timedelta(hours=hours)).isoformat(), "end": now.isoformat(), **f}


def test_repeats_of_a_live_view_are_recorded_once_within_the_window() -> None:
    c = ReadCoalescer(window_s=60)
    assert c.first(principal(), live(24, scope="service"))
    assert not c.first(principal(), live(24, scope="service"))  # auto-refresh: the period moved, same view


def test_another_view_caller_or_period_is_recorded() -> None:
    c = ReadCoalescer(window_s=60)
    assert c.first(principal(), live(24))
    assert c.first(principal(), live(24, q="vm"))
    assert c.first(principal(), live(168))
    assert c.first(principal("u2"), live(24))
    assert c.first(principal(org="globex"), live(24))
    fixed = {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-02T00:00:00+00:00"}
    assert c.first(principal(), fixed)
    assert not c.first(principal(), dict(fixed))
    assert c.first(principal(), {**fixed, "end": "2026-01-03T00:00:00+00:00"})


def test_the_window_passing_records_again_and_memory_is_bounded() -> None:
    c = ReadCoalescer(window_s=0.0, max_views=3)
    assert c.first(principal(), live(1))
    assert c.first(principal(), live(1))
    for i in range(10):
        c.first(principal(f"u{i}"), live(1))
    assert len(c._seen) == 3
