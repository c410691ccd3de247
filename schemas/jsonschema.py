"""JSON Schema for non-Python producers, generated from the pydantic models plus the catalog.

``python -m auditlogkit.schemas.jsonschema`` rewrites ``schemas/event.schema.json``; a unit test fails when the committed
file differs from what this module generates (so the two can never drift).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from auditlogkit.schemas.catalog import Catalog, get_catalog
from auditlogkit.schemas.event import AuditEvent

SCHEMA_PATH = Path(__file__).with_name("event.schema.json")


def build_schema(catalog: Catalog | None = None) -> dict[str, Any]:
    """The v1 event schema with the catalog triple expressed as if/then rules per scope and category."""
    catalog = catalog or get_catalog()
    schema = AuditEvent.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://auditlog.dev/schemas/audit-event-v1.json"
    schema["title"] = "Audit event, version 1"
    props = schema["properties"]
    props["occurred_at"]["description"] = "RFC 3339 with zone; at most 24 h in the future"
    props["event_id"]["description"] = "UUID set by the producer; the idempotency key"
    props["scope"]["enum"] = list(catalog.scopes)
    rules: list[dict[str, Any]] = []
    for s in catalog.scopes.values():
        cat_rules = [
            {
                "if": {"properties": {"category": {"const": c.code}}},
                "then": {"properties": {"action": {"enum": list(c.actions)}}},
            }
            for c in s.categories.values()
        ]
        rules.append(
            {
                "if": {"properties": {"scope": {"const": s.code}}, "required": ["scope"]},
                "then": {"properties": {"category": {"enum": list(s.categories)}}, "allOf": cat_rules},
            }
        )
    schema["allOf"] = rules
    actor = schema["$defs"]["Actor"]["properties"]
    actor["email"]["anyOf"][0]["format"] = "email"
    actor["ip"]["anyOf"][0]["format"] = "ip-address-v4-or-v6"
    actor["ip"]["anyOf"][0].pop("format")
    actor["ip"]["anyOf"][0]["anyOf"] = [{"format": "ipv4"}, {"format": "ipv6"}]
    return schema


def render() -> str:
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    SCHEMA_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")


if __name__ == "__main__":
    main()
