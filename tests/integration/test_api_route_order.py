"""The order in which the app's routes are registered does not matter: ``/v1/events/stream``, ``/v1/events/export``
and ``/v1/events/<uuid>`` reach their own handlers whichever router (or route) comes first, and a malformed event id
is still the 422 naming ``event_id``."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from auditlogkit.query_api.core import app as factory
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.test_api_helpers import auth, store_events, token


def _each_route_reversed(router: APIRouter) -> APIRouter:
    copy = APIRouter()
    copy.routes.extend(reversed(router.routes))
    return copy


ORDERS = {
    "reversed": lambda routers: routers[::-1],
    "shuffled": lambda routers: random.Random(21).sample(routers, len(routers)),
    "every route reversed": lambda routers: [_each_route_reversed(r) for r in routers[::-1]],
}


@pytest.fixture(params=sorted(ORDERS))
def client(request: pytest.FixtureRequest, store: Store, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, dict[str, str]]]:
    routers = list(factory.ROUTERS)
    reordered = ORDERS[request.param](routers)
    assert [r.routes for r in reordered] != [r.routes for r in routers]
    monkeypatch.setattr(factory, "ROUTERS", tuple(reordered))
    settings = Settings(data_dir=tmp_path, clickhouse_url=store.url, clickhouse_database=store.database,
                        jwt_secret="route-order-secret-0123456789abcdef")
    with TestClient(factory.create_app(settings, store), raise_server_exceptions=False) as c:
        yield c, auth(token(settings))


def test_events_paths_reach_their_handlers_in_any_order(client: tuple[TestClient, dict[str, str]],
                                                         store: Store) -> None:
    c, h = client
    ev = make_event()
    store_events(store, [ev])

    r = c.get(f"/v1/events/{ev['event_id']}", headers=h)  # the detail
    assert r.status_code == 200 and r.json()["event_id"] == ev["event_id"], r.text
    r = c.get(f"/v1/events/{str(uuid.UUID(ev['event_id'])).upper()}", headers=h)
    assert r.status_code == 200 and r.json()["event_id"] == ev["event_id"], r.text
    r = c.get(f"/v1/events/{uuid.uuid4()}", headers=h)
    assert r.status_code == 404 and r.json()["error"]["field"] == "event_id", r.text

    r = c.get("/v1/events/export", params={"format": "ndjson"}, headers=h)  # the export, not an event id
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson"), r.text
    assert ev["event_id"] in r.text and r.headers["content-disposition"].startswith("attachment")

    # the live tail, not an event id: only its handler reads Last-Event-ID
    r = c.get("/v1/events/stream", headers={**h, "Last-Event-ID": "not-a-position"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_position", r.text

    r = c.get("/v1/events", headers=h)  # the list
    assert r.status_code == 200 and [e["event_id"] for e in r.json()["data"]] == [ev["event_id"]]


def test_a_malformed_event_id_is_422_naming_it(client: tuple[TestClient, dict[str, str]]) -> None:
    c, h = client
    for bad in ("not-a-uuid", "0" * 31, "x" * 300, "stream-x"):
        r = c.get(f"/v1/events/{bad}", headers=h)
        assert r.status_code == 422, (bad, r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_parameter" and err["field"] == "event_id" and "is not a UUID" in err["message"]
    assert c.get("/v1/events/not-a-uuid/more", headers=h).status_code == 404  # no route has two segments there
