"""Builders of realistic v1 events for tests (valid by default; override any field)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from auditlogkit.schemas.catalog import get_catalog


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid event as a JSON-ready dict. Nested ``actor``/``target`` overrides merge into the defaults."""
    ev: dict[str, Any] = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
        "org_id": "acme",
        "workspace_id": "ml-research",
        "scope": "service",
        "category": "vm",
        "action": "vm.delete",
        "status": "SUCCESS",
        "actor": {"id": "u-1042", "email": "kim@acme.example", "type": "user", "ip": "203.0.113.7",
                  "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0"},
        "target": {"type": "vm", "id": "vm-7f3a", "name": "train-a100-4"},
        "description": "Deleted VM train-a100-4",
        "detail": {"before": {"state": "stopped", "flavor": "a100.4x"}, "after": None},
        "source": "compute-api",
        "request_id": "req-91c2",
    }
    for k, v in overrides.items():
        if k in ("actor", "target") and isinstance(v, dict):
            ev[k] = {**ev[k], **v}
        else:
            ev[k] = v
    return ev


def random_events(n: int, seed: int = 0, orgs: tuple[str, ...] = ("acme", "globex"), days: int = 7) -> list[dict[str, Any]]:
    """``n`` valid events over random catalog actions, orgs, workspaces and the last ``days`` days."""
    rng = random.Random(seed)
    triples = get_catalog().producer_actions()
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        s, c, a = rng.choice(triples)
        org = rng.choice(orgs)
        out.append(make_event(
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            occurred_at=(now - timedelta(seconds=rng.randint(60, days * 86400))).isoformat().replace("+00:00", "Z"),
            org_id=org, workspace_id=rng.choice([f"{org}-ws1", f"{org}-ws2", None]),
            scope=s, category=c, action=a, status=rng.choice(["SUCCESS", "SUCCESS", "FAILED"]),
            actor={"id": f"u-{i % 50}", "email": f"user{i % 50}@{org}.example",
                   "ip": rng.choice([f"198.51.100.{i % 250}", f"2001:db8::{i % 999:x}"])},
            target={"type": c, "id": f"{c}-{i}", "name": f"{c}-name-{i}"},
            description=None,
        ))
    return out
