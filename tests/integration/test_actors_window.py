"""The actors window (query_api/read/actors.py) against ClickHouse's own autocomplete, on the real chDB engine."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

from auditlogkit.query_api.read.actors import ActorsWindow, suggest
from auditlogkit.query_api.security.principal import Principal
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.test_api_helpers import store_events

OWNER = Principal(sub="o", email="o@acme.example", org_id="acme", role="org_owner")
WS_ADMIN = Principal(sub="w", email="w@acme.example", org_id="acme", role="workspace_admin", workspaces=("ws1",))
NAMES = ["kim", "Kim.Lee", "KIRA", "lee", "léa", "Łukasz", "ki_m", "kim%"]


def _events(rng: random.Random, n: int, org: str = "acme") -> list[dict]:
    now = datetime.now(UTC)
    return [make_event(org_id=org, workspace_id=rng.choice(["ws1", "ws2", None]),
                       occurred_at=(now - timedelta(seconds=rng.randint(60, 86400))).isoformat().replace("+00:00", "Z"),
                       actor={"email": f"{rng.choice(NAMES)}{rng.randint(0, 30)}@{org}.example"})
            for _ in range(n)]


def _still(_store: Store) -> None:
    """Wait until the actors table's directory has been still long enough to be trusted (no query needed)."""
    time.sleep(1.2)


def test_every_answer_is_clickhouses(store: Store) -> None:
    rng = random.Random(5)
    store_events(store, _events(rng, 300) + _events(rng, 50, org="globex"))
    window = ActorsWindow(store)
    served = 0
    for prefix in ["ki", "KI", "kim", "le", "lé", "ka", "ki_", "kim%", "zz", "Łu", "kim1", "k"]:
        for who in (OWNER, WS_ADMIN):
            got = window.suggest(ScopedQuery(who), prefix)
            want = suggest(store, ScopedQuery(who), prefix)
            if got is None:
                assert not prefix.isascii()
                continue
            served += 1
            assert got == want, (prefix, who.role)
    assert served >= 18 and window.stats["reads"] >= 1


def test_new_actors_show_at_once(store: Store) -> None:
    rng = random.Random(6)
    store_events(store, _events(rng, 50))
    window = ActorsWindow(store)
    _still(store)
    assert window.suggest(ScopedQuery(OWNER), "zed") == []
    reads = window.stats["reads"]
    assert window.suggest(ScopedQuery(OWNER), "zed") == [] and window.stats["reads"] == reads  # still: from memory
    store_events(store, [make_event(org_id="acme", actor={"email": "Zed@acme.example"})])
    got = window.suggest(ScopedQuery(OWNER), "zed")
    assert got == suggest(store, ScopedQuery(OWNER), "zed") and [a["email"] for a in got] == ["Zed@acme.example"]


def test_another_orgs_actors_are_never_suggested(store: Store) -> None:
    rng = random.Random(7)
    store_events(store, _events(rng, 80, org="globex"))
    window = ActorsWindow(store)
    assert window.suggest(ScopedQuery(OWNER), "ki") == [] == suggest(store, ScopedQuery(OWNER), "ki")
