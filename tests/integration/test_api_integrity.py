"""``GET /v1/integrity``: an org owner checks its organization's events against the digests recorded at insert."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import random_events
from tests.integration.test_api_helpers import app_client, auth, store_events, token


@pytest.fixture
def api(settings: Settings, store: Store) -> Iterator[TestClient]:
    with app_client(settings.model_copy(update={"api_integrity_cache_seconds": 0, "integrity_recheck_seconds": 1.0}), store) as c:
        yield c


def _mutate(store: Store, sql: str, **params: str) -> None:
    store.client().command(sql, parameters=params, settings={"mutations_sync": 2})


def test_owner_sees_its_org_clean_then_each_tampering(api: TestClient, store: Store, settings: Settings) -> None:
    evs = random_events(60, seed=31, orgs=("acme", "globex"), days=3)
    store_events(store, evs)
    acme = [e for e in evs if e["org_id"] == "acme"]
    globex = [e for e in evs if e["org_id"] == "globex"]
    owner = auth(token(settings))
    body = api.get("/v1/integrity", headers=owner).json()
    assert body["org_id"] == "acme" and body["clean"] is True and body["findings"] == {}
    assert body["counts"]["verified"] == len(acme)

    edited, gone = acme[0]["event_id"], acme[1]["event_id"]
    _mutate(store, "ALTER TABLE audit_events UPDATE description = 'nothing happened' WHERE event_id = {e:UUID}",
            e=edited)
    _mutate(store, "ALTER TABLE audit_events DELETE WHERE event_id = {e:UUID}", e=gone)
    _mutate(store, "ALTER TABLE audit_events DELETE WHERE event_id = {e:UUID}", e=globex[0]["event_id"])
    body = api.get("/v1/integrity", headers=owner).json()
    assert body["clean"] is False
    assert body["findings"] == {"altered": [edited], "deleted": [gone]}  # not globex's deletion
    assert body["counts"]["verified"] == len(acme) - 2

    other = api.get("/v1/integrity", headers=auth(token(settings, org="globex"))).json()
    assert other["findings"] == {"deleted": [globex[0]["event_id"]]}


def test_only_org_owners_with_read_may_check(api: TestClient, settings: Settings) -> None:
    admin = auth(token(settings, role="workspace_admin", workspaces=["acme-ws1"]))
    r = api.get("/v1/integrity", headers=admin)
    assert r.status_code == 403 and "org owner" in r.json()["error"]["message"]
    assert api.get("/v1/integrity", headers=auth(token(settings, permissions=()))).status_code == 403
    assert api.get("/v1/integrity").status_code == 401


def test_runs_are_cached_per_org_and_each_call_is_still_audited(settings: Settings, store: Store) -> None:
    """Within api_integrity_cache_seconds the org's last run answers (same checked_at) and concurrent callers
    share one run; another org runs its own."""
    import concurrent.futures

    store_events(store, random_events(20, seed=7, orgs=("acme", "globex"), days=2))
    with app_client(settings.model_copy(update={"api_integrity_cache_seconds": 60}), store) as c:
        owner = auth(token(settings))
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            bodies = list(pool.map(lambda _: c.get("/v1/integrity", headers=owner).json(), range(4)))
        assert len({b["checked_at"] for b in bodies}) == 1
        assert c.get("/v1/integrity", headers=owner).json()["checked_at"] == bodies[0]["checked_at"]
        other = c.get("/v1/integrity", headers=auth(token(settings, org="globex"))).json()
        assert other["org_id"] == "globex"
