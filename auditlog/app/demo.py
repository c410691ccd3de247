"""Realistic demo events for ``auditlog up --demo``: three orgs, several workspaces, every catalog action,
failures, IPv4 and IPv6, browsers and SDKs, before/after details, spread over the last 30 days; plus the
stories of the product pages (an accidental VM deletion, a cost spike from large instances, a password
spraying burst from one IP, token issuance and revocation, policy attachments, quota changes).

Contract: :func:`demo_events` is deterministic for a given ``now`` and ``seed`` and returns JSON-ready dicts
that pass ``schemas.parse_event``; :data:`DEMO_ORGS` names the tenants and their workspaces.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from auditlogkit.schemas.catalog import Catalog, get_catalog
from auditlogkit.schemas.event import Status

DEMO_ORGS: dict[str, list[str]] = {
    "acme": ["ml-research", "inference-prod", "data-platform"],
    "globex": ["vision", "nlp"],
    "initech": ["default"],
}
DEMO_ADMIN_WORKSPACES = ("acme", ["ml-research", "inference-prod"])  # the workspace admin's grant
_PEOPLE = {
    "acme": ["kim", "lee", "park", "choi", "jung", "yoon"],
    "globex": ["hank", "mindy", "frank", "nora"],
    "initech": ["peter", "samir", "joanna"],
}
_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "gpucloud-python-sdk/1.8.2 CPython/3.11.9 Linux/6.8",
    "terraform-provider-gpucloud/2.4.0 (+https://registry.terraform.io)",
    "gpucloud-cli/0.19.1 (darwin; arm64)",
    "curl/8.5.0",
]
_FLAVORS = ["a100.1x", "a100.4x", "a100.8x", "h100.8x", "l40s.2x", "cpu.4c16g", "rtx4090.1x"]
_SOURCES = {
    "organization": "iam-api",
    "authentication": "auth-api",
    "billing": "billing-api",
    "workspace": "workspace-api",
    "service": "compute-api",
}
_TARGET_TYPES = {
    "member": "user", "role": "role", "policy": "policy", "workspace": "workspace", "access_token": "access_token",
    "notice": "notice", "audit_log": "audit_log", "sign_in": "user", "session": "session", "password": "user",
    "profile": "user", "credit": "credit", "payment": "payment", "plan": "plan", "voucher": "voucher",
    "settings": "workspace", "gpu_quota": "quota", "vm": "vm", "storage": "volume", "network": "vpc",
    "notebook": "notebook", "container": "container", "inference": "endpoint",
}
_NAMES = {
    "vm": ["train-a100-4", "eval-l40s", "dev-box-kim", "batch-h100-8", "jupyter-gpu"],
    "storage": ["datasets-vol", "ckpt-vol", "scratch-01"],
    "network": ["vpc-main", "vpc-staging", "peering-db"],
    "notebook": ["nb-llm-finetune", "nb-eda", "nb-vision"],
    "container": ["ctr-triton", "ctr-vllm", "ctr-sd"],
    "inference": ["ep-llama-70b", "ep-whisper", "ep-embed"],
    "policy": ["ReadOnlyAccess", "GpuOperator", "BillingViewer", "WorkspaceAdmin"],
    "role": ["viewer", "operator", "billing-admin"],
    "access_token": ["ci-deploy", "terraform", "notebook-sync", "grafana"],
    "gpu_quota": ["a100", "h100", "l40s"],
}


class _Gen:
    def __init__(self, now: datetime, seed: int, catalog: Catalog) -> None:
        self.now = now
        self.rng = random.Random(seed)
        self.catalog = catalog
        self.seed = seed
        self.n = 0

    def ip(self, org: str, person: str) -> str:
        h = sum(map(ord, org + person))
        if h % 3 == 0:
            return f"2001:db8:{h % 97:x}::{h % 251:x}"
        return f"{[203, 198, 192][h % 3]}.{[0, 51, 0][h % 3]}.{[113, 100, 2][h % 3]}.{h % 250 + 1}"

    def when(self, lo_days: float = 30, hi_days: float = 0.01) -> datetime:
        return self.now - timedelta(seconds=self.rng.uniform(hi_days * 86400, lo_days * 86400))

    def event(self, org: str, scope: str, category: str, action: str, *, person: str | None = None,
              at: datetime | None = None, status: str | None = None, workspace: str | None = None,
              target_name: str | None = None, detail: Any = None, ip: str | None = None,
              ua: str | None = None) -> dict[str, Any]:
        rng = self.rng
        person = person or rng.choice(_PEOPLE[org])
        at = at or self.when()
        if status is None:
            status = Status.FAILED if rng.random() < 0.07 else Status.SUCCESS
        if workspace is None and scope in ("workspace", "service"):
            workspace = rng.choice(DEMO_ORGS[org])
        names = _NAMES.get(category)
        tname = target_name or (rng.choice(names) if names else f"{category}-{rng.randint(100, 999)}")
        tid = f"{_TARGET_TYPES[category][:3]}-{uuid.UUID(int=rng.getrandbits(128)).hex[:8]}"
        if category in ("sign_in", "password", "profile", "session"):
            tname = f"{person}@{org}.example"  # one acts on one's own account
        elif category == "member":
            tname = f"{rng.choice(_PEOPLE[org])}@{org}.example"
        self.n += 1
        label = self.catalog.action_label(scope, action)
        return {
            "schema_version": 1,
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"auditlog-demo/{self.seed}/{self.n}")),
            "occurred_at": at.isoformat().replace("+00:00", "Z"),
            "org_id": org,
            "workspace_id": workspace,
            "scope": scope,
            "category": category,
            "action": action,
            "status": status,
            "actor": {
                "id": f"u-{org[:2]}-{person}",
                "email": f"{person}@{org}.example",
                "type": "user",
                "ip": ip or self.ip(org, person),
                "user_agent": ua or rng.choice(_UAS),
            },
            "target": {"type": _TARGET_TYPES[category], "id": tid, "name": tname},
            "description": f"{label} {tname}" + (" (failed)" if status == Status.FAILED else ""),
            "detail": detail if detail is not None else self.detail(category, action, tname, status),
            "source": _SOURCES[scope],
            "request_id": f"req-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}",
        }

    def detail(self, category: str, action: str, name: str, status: str) -> dict[str, Any]:
        rng = self.rng
        verb = action.split(".", 1)[1]
        if status == Status.FAILED:
            return {"error": rng.choice(["permission denied", "quota exceeded", "invalid argument", "timeout"]),
                    "request": {"name": name}}
        if category == "vm":
            flavor = rng.choice(_FLAVORS)
            state = {"state": "running", "flavor": flavor, "zone": rng.choice(["kr-central-1", "us-east-2"])}
            if verb == "create":
                return {"before": None, "after": state, "request": {"flavor": flavor, "image": "ubuntu-22.04-cuda12"}}
            if verb == "delete":
                return {"before": {**state, "state": "stopped"}, "after": None}
            if verb in ("start", "stop", "update"):
                after = {**state, "state": "running" if verb == "start" else "stopped"}
                return {"before": {**state, "state": "stopped" if verb == "start" else "running"}, "after": after}
            return {"request": {"page_size": 50}}
        if verb in ("update", "change", "role_update", "method_update"):
            return {"before": {"value": rng.randint(1, 8)}, "after": {"value": rng.randint(1, 16)}}
        if verb in ("create", "attach", "assign", "grant", "add", "invite"):
            return {"before": None, "after": {"name": name}}
        if verb in ("delete", "detach", "remove", "cancel", "expire"):
            return {"before": {"name": name}, "after": None}
        return {"request": {"name": name}}


def demo_events(now: datetime | None = None, seed: int = 7, background: int = 3200) -> list[dict[str, Any]]:
    """The demo data set (about ``background`` + 400 events)."""
    now = now or datetime.now(UTC)
    cat = get_catalog()
    g = _Gen(now, seed, cat)
    out: list[dict[str, Any]] = []
    triples = cat.producer_actions()
    # every catalog action at least once in every org
    for org in DEMO_ORGS:
        for s, c, a in triples:
            out.append(g.event(org, s, c, a))
    # background traffic, weighted toward sign-ins and compute
    weights = [6 if c in ("sign_in", "vm", "session") else 3 if s == "service" else 1 for s, c, _ in triples]
    for _ in range(background):
        s, c, a = g.rng.choices(triples, weights)[0]
        out.append(g.event(g.rng.choice(["acme", "acme", "globex", "initech"]), s, c, a))
    # story 1: accidental VM deletion, 2 days ago
    t = now - timedelta(days=2, hours=3)
    out.append(g.event("acme", "service", "vm", "vm.delete", person="park", at=t, status=Status.SUCCESS,
                       workspace="ml-research", target_name="train-a100-4",
                       detail={"before": {"state": "running", "flavor": "a100.8x", "disks": ["ckpt-vol"]},
                               "after": None, "request": {"force": True}}))
    # story 2: a cost spike: large instances created within one hour, 5 days ago
    t = now - timedelta(days=5, hours=6)
    for i in range(6):
        out.append(g.event("acme", "service", "vm", "vm.create", person="choi", at=t + timedelta(minutes=7 * i),
                           status=Status.SUCCESS, workspace="inference-prod", target_name=f"burst-h100-{i}",
                           detail={"before": None, "after": {"state": "running", "flavor": "h100.8x"},
                                   "request": {"flavor": "h100.8x", "count": 1}}))
    # story 3: password spraying from one IP, then lock-out, 1 day ago
    t = now - timedelta(days=1, hours=2)
    for i in range(40):
        person = _PEOPLE["acme"][i % 3]
        action = "sign_in.otp_failure" if i % 8 == 7 else "sign_in.password_failure"
        out.append(g.event("acme", "authentication", "sign_in", action, person=person, at=t + timedelta(seconds=20 * i),
                           status=Status.FAILED, ip="185.220.101.47", ua="python-requests/2.31.0",
                           detail={"reason": "invalid password" if "password" in action else "invalid OTP"}))
    out.append(g.event("acme", "authentication", "sign_in", "sign_in.attempts_exceeded", person="kim",
                       at=t + timedelta(minutes=14), status=Status.FAILED, ip="185.220.101.47", ua="python-requests/2.31.0",
                       detail={"locked_until": (t + timedelta(minutes=44)).isoformat()}))
    # story 4: access tokens issued and revoked; story 5: policy attachments; story 6: quota changes
    for d in (9, 4, 1):
        out.append(g.event("acme", "organization", "access_token", "access_token.create", person="lee",
                           at=now - timedelta(days=d, hours=1), status=Status.SUCCESS, target_name=f"ci-deploy-{d}",
                           detail={"before": None, "after": {"scopes": ["vm:write", "storage:read"], "expires_in_days": 90}}))
        out.append(g.event("acme", "organization", "access_token", "access_token.delete", person="kim",
                           at=now - timedelta(days=d) + timedelta(hours=3), status=Status.SUCCESS, target_name=f"ci-deploy-{d}"))
        out.append(g.event("acme", "organization", "policy", "policy.attach", person="kim",
                           at=now - timedelta(days=d, hours=5), status=Status.SUCCESS, target_name="GpuOperator",
                           detail={"before": None, "after": {"policy": "GpuOperator", "principal": "lee@acme.example"}}))
        out.append(g.event("acme", "workspace", "gpu_quota", "gpu_quota.change", person="kim",
                           at=now - timedelta(days=d, hours=7), status=Status.SUCCESS, workspace="ml-research",
                           target_name="h100", detail={"before": {"h100": 8}, "after": {"h100": 16 * d}}))
    return out
