"""Autocomplete is scoped exactly like the event list: a workspace admin never sees an e-mail that was seen only on
events it cannot list (org-level events, other workspaces, other orgs), whatever blank ids its token carries."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import jwt
import pytest
from fastapi.testclient import TestClient

from auditlogkit.query_api.read import actors
from auditlogkit.query_api.security.principal import Principal
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.test_api_helpers import app_client, auth, store_events

SECRET = "actors-scope-secret-0123456789abcdef0123"
# (workspace, e-mail): every e-mail starts with "us" so one prefix hits all
LAYOUT = [("w1", "us-w1@acme.example"), ("w2", "us-w2@acme.example"), (None, "us-org@acme.example"),
          ("w1", "us-both@acme.example"), (None, "us-both@acme.example"), ("w2", "us-Mixed@acme.example"),
          (None, "us-mixed@acme.example")]
ORG_ONLY = {"us-org@acme.example", "us-mixed@acme.example"}
OTHER_WS_ONLY = {"us-w2@acme.example", "us-Mixed@acme.example"}
W1 = {"us-w1@acme.example", "us-both@acme.example"}


@pytest.fixture(scope="module")
def world(chdb_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Store]]:
    store = Store(chdb_url, f"acs_{uuid.uuid4().hex[:10]}")
    migrate(store)
    evs = [make_event(org_id="acme", workspace_id=ws, actor={"email": email}) for ws, email in LAYOUT]
    evs.append(make_event(org_id="globex", workspace_id="w1", actor={"email": "us-gx@globex.example"}))
    evs.append(make_event(org_id="globex", workspace_id=None, actor={"email": "us-gxorg@globex.example"}))
    store_events(store, evs)
    settings = Settings(data_dir=tmp_path_factory.mktemp("acs"), clickhouse_url=store.url,
                        clickhouse_database=store.database, jwt_secret=SECRET, api_rate_per_second=0)
    with app_client(settings, store) as c:
        yield c, store
    store.client().command(f"DROP DATABASE IF EXISTS {store.database} SYNC")


def _tok(role: str, workspaces: list[str] | None) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "u-x", "email": "x@acme.example", "org_id": "acme", "role": role,
                       "workspaces": workspaces, "permissions": ["audit:read"], "iat": now, "exp": now + 600},
                      SECRET, algorithm="HS256")


def _suggested(client: TestClient, tok: str) -> set[str]:
    r = client.get("/v1/actors", params={"prefix": "us"}, headers=auth(tok))
    assert r.status_code == 200, r.text
    return {a["email"] for a in r.json()["data"]}


def _listed(client: TestClient, tok: str) -> set[str]:
    r = client.get("/v1/events", params={"limit": 1000}, headers=auth(tok))
    assert r.status_code == 200, r.text
    return {e["actor"]["email"] for e in r.json()["data"]}


@pytest.mark.parametrize("workspaces", [["w1"], ["", "w1"], ["w1", ""], [" ", "w1", "\t"]])
def test_workspace_admin_sees_only_emails_of_events_it_can_list(world: tuple[TestClient, Store],
                                                               workspaces: list[str]) -> None:
    client, _ = world
    tok = _tok("workspace_admin", workspaces)
    got = _suggested(client, tok)
    assert got == W1
    assert not got & (ORG_ONLY | OTHER_WS_ONLY)
    assert got == _listed(client, tok)  # exactly the list's scope


@pytest.mark.parametrize("workspaces", [[""], ["", " "], [], None])
def test_workspace_admin_without_a_real_workspace_sees_nothing(world: tuple[TestClient, Store],
                                                              workspaces: list[str] | None) -> None:
    client, _ = world
    tok = _tok("workspace_admin", workspaces)
    assert _suggested(client, tok) == set()
    assert _listed(client, tok) == set()


def test_org_owner_sees_every_email_of_its_org(world: tuple[TestClient, Store]) -> None:
    client, _ = world
    tok = _tok("org_owner", None)
    got = _suggested(client, tok)
    assert got == {email for _, email in LAYOUT}
    assert got >= ORG_ONLY | OTHER_WS_ONLY
    assert got == _listed(client, tok)


@pytest.mark.parametrize("workspaces", [("", "w1"), ("",)])
def test_scoping_excludes_no_workspace_rows_whatever_the_principal(world: tuple[TestClient, Store],
                                                                   workspaces: tuple[str, ...]) -> None:
    """A principal carrying '' (built directly, not from a token) still cannot reach rows without a workspace: by
    the tenant conditions alone, and through the autocomplete."""
    _, store = world
    p = Principal("u-x", "x@acme.example", "acme", "workspace_admin", workspaces, frozenset({"audit:read"}))
    expected = W1 if "w1" in workspaces else set()
    sq = ScopedQuery(p)
    rows = store.client().query(
        f"SELECT DISTINCT actor_email FROM {actors.ACTORS_TABLE} WHERE {sq.where()}", parameters=sq.params,
    ).result_rows
    assert {r[0] for r in rows} == expected
    assert {a["email"] for a in actors.suggest(store, ScopedQuery(p), "us")} == expected
