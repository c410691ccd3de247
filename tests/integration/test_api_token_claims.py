"""Token hardening over HTTP: with ``jwt_audience`` / ``jwt_issuer`` set, tokens without or with other ``aud`` /
``iss``, time claims that are not numbers and claims that could not be recorded in the caller's audit event are
answered 401 with the JSON error body naming the claim; a proper token reads, blank workspace ids granting nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.test_api_helpers import app_client, auth, store_events

SECRET = "claims-secret-0123456789abcdef0123456789"
AUD = "auditlog-api"
ISS = "https://idp.acme.example"


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "u-1", "email": "u1@acme.example", "org_id": "acme", "role": "org_owner", "workspaces": [],
            "permissions": ["audit:read"], "iat": now, "exp": now + 600, "aud": AUD, "iss": ISS}
    return {k: v for k, v in {**base, **over}.items() if v is not ...}


BAD: dict[str, tuple[dict[str, Any], str]] = {
    "no aud": (_claims(aud=...), "claim 'aud' is missing"),
    "other aud": (_claims(aud="another-api"), "claim 'aud'"),
    "no iss": (_claims(iss=...), "claim 'iss' is missing"),
    "other iss": (_claims(iss="https://evil.example"), "claim 'iss'"),
    "exp as string": (_claims(exp="9999999999"), "claim 'exp' must be a number"),
    "exp as bool": (_claims(exp=True), "claim 'exp' must be a number"),
    "nbf as string": (_claims(nbf="0"), "claim 'nbf' must be a number"),
    "iat as bool": (_claims(iat=False), "claim 'iat' must be a number"),
    "email not an e-mail": (_claims(email="not-an-email"), "claim 'email'"),
    "sub of 257 chars": (_claims(sub="s" * 257), "claim 'sub'"),
    "org_id of 129 chars": (_claims(org_id="o" * 129), "claim 'org_id'"),
}


def test_bad_tokens_get_401_json_errors_naming_the_claim(store: Store, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, clickhouse_url=store.url, clickhouse_database=store.database,
                        jwt_secret=SECRET, jwt_audience=AUD, jwt_issuer=ISS, api_rate_per_second=0)
    store_events(store, [make_event(org_id="acme", workspace_id="w1"), make_event(org_id="acme", workspace_id="w2"),
                         make_event(org_id="acme", workspace_id=None)])
    with app_client(settings, store) as client:
        for name, (claims, needle) in BAD.items():
            r = client.get("/v1/events", headers=auth(jwt.encode(claims, SECRET, algorithm="HS256")))
            assert r.status_code == 401, (name, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/json"), name
            assert r.headers["www-authenticate"] == "Bearer", name
            body = r.json()
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, (name, body)
            assert body["error"]["code"] == "unauthorized" and body["error"]["field"] is None, (name, body)
            assert needle in body["error"]["message"], (name, body)
        # the proper token reads the whole org; a list audience naming this API is accepted too
        for claims in (_claims(), _claims(aud=["other", AUD])):
            r = client.get("/v1/events", headers=auth(jwt.encode(claims, SECRET, algorithm="HS256")))
            assert r.status_code == 200 and len(r.json()["data"]) == 3, r.text
        # a blank workspace id grants nothing: only w1's event, not the one without a workspace
        admin = _claims(role="workspace_admin", workspaces=["", "w1", "  "])
        r = client.get("/v1/events", headers=auth(jwt.encode(admin, SECRET, algorithm="HS256")))
        assert r.status_code == 200 and [e["workspace_id"] for e in r.json()["data"]] == ["w1"], r.text


@pytest.mark.parametrize("claims", [_claims(aud="anything"), _claims(aud=..., iss=...)])
def test_without_audience_and_issuer_settings_they_are_not_required(store: Store, tmp_path: Path,
                                                                    claims: dict[str, Any]) -> None:
    settings = Settings(data_dir=tmp_path, clickhouse_url=store.url, clickhouse_database=store.database,
                        jwt_secret=SECRET, api_rate_per_second=0)
    with app_client(settings, store) as client:
        r = client.get("/v1/events", headers=auth(jwt.encode(claims, SECRET, algorithm="HS256")))
        assert r.status_code == 200, r.text
