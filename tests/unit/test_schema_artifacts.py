"""Generated artifacts stay in step with their sources; the catalog file keeps its invariants."""

from __future__ import annotations

import json

from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.jsonschema import SCHEMA_PATH, render


def test_committed_json_schema_is_current() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render(), (
        "schemas/event.schema.json is stale: run `python -m auditlogkit.schemas.jsonschema` and commit it"
    )


def test_json_schema_encodes_the_catalog_triples() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    cat = get_catalog()
    assert schema["properties"]["scope"]["enum"] == list(cat.scopes)
    service = next(r for r in schema["allOf"] if r["if"]["properties"]["scope"]["const"] == "service")
    assert "vm" in service["then"]["properties"]["category"]["enum"]
    assert schema["additionalProperties"] is False


def test_catalog_covers_the_product_pages() -> None:
    cat = get_catalog()
    assert set(cat.scopes) == {"organization", "authentication", "billing", "workspace", "service"}
    for scope, action in [("service", "vm.delete"), ("authentication", "sign_in.otp_failure"),
                          ("organization", "policy.attach"), ("workspace", "gpu_quota.change"),
                          ("service", "notebook.stop"), ("organization", "access_token.delete")]:
        assert cat.labels(scope, action) is not None
    assert cat.labels("service", "notebook.stop") == ("Service", "AI Notebook", "Stop Notebook")
    assert len(cat.all_actions()) == 84  # 80 + the log streams' four audit_log.stream_* (STREAMS.md)
    assert ("organization", "member.delete") in [(s, a) for s, _, a in cat.all_actions()]
    assert ("workspace", "member.delete") not in [(s, a) for s, _, a in cat.all_actions()]
