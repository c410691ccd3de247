"""Every use case of the product pages, answered through the HTTP API on events published through Kafka
(real Tansu broker, our producer, the real consumer worker, real chDB).

Product pages: console-audit-log.txt (VM deletion, cost spike, suspicious sign-ins, API tokens) and
gpu-cloud-audit-logs.txt (scopes/categories, workspace admins see their workspace, policy attachments, quota
changes, keyword search).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.producer import AuditProducer
from auditlogkit.query_api.core.app import create_app
from auditlogkit.schemas.rows import EVENTS_TABLE
from auditlogkit.server.broker import EmbeddedBroker, ensure_topics
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import make_event, random_events
from tests.integration.test_api_helpers import auth, token

NOW = datetime.now(UTC).replace(microsecond=0)


def ts(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")


def _events() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    ids: dict[str, Any] = {}
    evs: list[dict[str, Any]] = []
    # background noise of every kind in both orgs
    for e in random_events(400, seed=11, orgs=("acme", "globex"), days=5):
        e["occurred_at"] = min(e["occurred_at"], ts(30))
        evs.append(e)
    # 1. accidental VM deletion (around 3 h ago), plus other deletions earlier and a vm.delete in another org
    ids["vm_delete"] = str(uuid.uuid4())
    evs.append(make_event(event_id=ids["vm_delete"], occurred_at=ts(180), org_id="acme", workspace_id="ml-research",
                          scope="service", category="vm", action="vm.delete",
                          actor={"id": "u-7", "email": "intern@acme.example"},
                          target={"type": "vm", "id": "vm-7f3a", "name": "train-a100-4"},
                          description="Deleted VM train-a100-4",
                          detail={"before": {"state": "running", "flavor": "a100.4x"}, "after": None}))
    evs.append(make_event(occurred_at=ts(60 * 30), org_id="acme", action="vm.delete",
                          target={"id": "vm-old", "name": "old-box"}, description="Deleted VM old-box"))
    evs.append(make_event(occurred_at=ts(170), org_id="globex", workspace_id="vision", action="vm.delete",
                          target={"id": "vm-gx", "name": "globex-box"}, description="Deleted VM globex-box"))
    # 2. cost spike: large instances created in a window 2 days ago
    for i, (who, flavor) in enumerate([("kim@acme.example", "a100.8x"), ("lee@acme.example", "cpu.4c16g"),
                                       ("kim@acme.example", "h100.8x"), ("park@acme.example", "l40s.2x")]):
        evs.append(make_event(occurred_at=ts(60 * 48 - i * 5), org_id="acme", workspace_id="inference-prod",
                              action="vm.create", actor={"id": f"u-{who[:3]}", "email": who},
                              target={"id": f"vm-new-{i}", "name": f"big-{flavor}"},
                              description=f"Created VM big-{flavor}",
                              detail={"request": {"flavor": flavor, "count": 2}}))
    evs.append(make_event(occurred_at=ts(60 * 24 * 4), org_id="acme", action="vm.create",
                          actor={"email": "choi@acme.example"}, target={"id": "vm-ow", "name": "outside-window"},
                          description="Created VM outside-window",
                          detail={"request": {"flavor": "h100.8x"}}))
    # 3. password spraying: 12 password failures + 3 OTP failures from one IP against one e-mail
    for i in range(15):
        action = "sign_in.password_failure" if i < 12 else "sign_in.otp_failure"
        evs.append(make_event(occurred_at=ts(90 - i), org_id="acme", workspace_id=None, scope="authentication",
                              category="sign_in", action=action, status="FAILED",
                              actor={"id": "u-victim", "email": "victim@acme.example", "ip": "203.0.113.66"},
                              target={"type": "user", "id": "u-victim", "name": "victim@acme.example"},
                              description="Sign-in failed", detail={"reason": "bad password"}))
    for i in range(2):
        evs.append(make_event(occurred_at=ts(100 + i), org_id="acme", workspace_id=None, scope="authentication",
                              category="sign_in", action="sign_in.password_failure", status="FAILED",
                              actor={"id": "u-typo", "email": "typo@acme.example", "ip": "2001:db8::7"},
                              target={"type": "user", "id": "u-typo", "name": None}, description="Sign-in failed"))
    # 4. access tokens created and deleted
    ids["tok"] = "tok-9a1"
    evs.append(make_event(occurred_at=ts(300), org_id="acme", workspace_id=None, scope="organization",
                          category="access_token", action="access_token.create",
                          target={"type": "access_token", "id": "tok-9a1", "name": "ci-deploy"},
                          description="Created access token ci-deploy",
                          detail={"scopes": ["vm:write"], "expires_in_days": 365}))
    evs.append(make_event(occurred_at=ts(240), org_id="acme", workspace_id=None, scope="organization",
                          category="access_token", action="access_token.delete",
                          target={"type": "access_token", "id": "tok-9a1", "name": "ci-deploy"},
                          description="Revoked access token ci-deploy"))
    # 5. policy attachments
    ids["policy"] = str(uuid.uuid4())
    evs.append(make_event(event_id=ids["policy"], occurred_at=ts(200), org_id="acme", workspace_id=None,
                          scope="organization", category="policy", action="policy.attach",
                          target={"type": "policy", "id": "pol-admins", "name": "AdminAccess"},
                          description="Attached policy AdminAccess to user lee",
                          detail={"principal": {"type": "user", "id": "u-lee"}}))
    # 6. quota changes in a workspace
    ids["quota"] = str(uuid.uuid4())
    evs.append(make_event(event_id=ids["quota"], occurred_at=ts(400), org_id="acme", workspace_id="ml-research",
                          scope="workspace", category="gpu_quota", action="gpu_quota.change",
                          target={"type": "quota", "id": "q-ml", "name": "A100 quota"},
                          description="Changed GPU quota of ml-research",
                          detail={"before": {"a100": 8}, "after": {"a100": 16}}))
    return evs, ids


async def _publish_and_consume(settings: Settings, store: Store, events: list[dict[str, Any]]) -> None:
    worker = ConsumerWorker(settings, store)
    task = asyncio.create_task(worker.run())
    try:
        async with AuditProducer(settings.kafka_bootstrap, settings.topic) as producer:
            await producer.send_many(events)
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            n = store.client().query(f"SELECT count() FROM {EVENTS_TABLE} FINAL").result_rows[0][0]
            if n >= len(events):
                break
            assert not task.done(), "consumer stopped"
            assert asyncio.get_running_loop().time() < deadline, f"only {n}/{len(events)} stored"
            await asyncio.sleep(0.2)
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture(scope="module")
def world(broker: EmbeddedBroker, chdb_url: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[TestClient, Settings, dict[str, Any]]]:
    suffix = uuid.uuid4().hex[:8]
    topic, dlq = f"uc.{suffix}", f"uc.{suffix}.dlq"
    asyncio.run(ensure_topics(broker.bootstrap, [topic, dlq], 6))
    store = Store(chdb_url, f"uc_{suffix}")
    migrate(store)
    settings = Settings(data_dir=tmp_path_factory.mktemp("uc"), kafka_bootstrap=broker.bootstrap, topic=topic,
                        dlq_topic=dlq, consumer_group=f"g-{suffix}", clickhouse_url=store.url,
                        clickhouse_database=store.database, session_timeout_ms=3000, batch_max_seconds=0.2,
                        jwt_secret="use-case-secret-0123456789abcdef0123")
    events, ids = _events()
    asyncio.run(_publish_and_consume(settings, store, events))
    with TestClient(create_app(settings, store), raise_server_exceptions=False) as client:
        yield client, settings, ids
    store.client().command(f"DROP DATABASE IF EXISTS {store.database} SYNC")


def _get(world: tuple[TestClient, Settings, dict[str, Any]], path: str, params: Any = None, **tok: Any) -> Any:
    client, settings, _ = world
    r = client.get(path, params=params, headers=auth(token(settings, **tok)))
    assert r.status_code == 200, r.text
    return r.json()


def test_tracing_an_accidental_vm_deletion(world: Any) -> None:
    """Category = resource delete, time range around it, deleted id and name in the JSON detail."""
    page = _get(world, "/v1/events", {"scope": "service", "category": "vm", "action": "vm.delete",
                                      "start": ts(240), "end": ts(120)})
    assert [e["event_id"] for e in page["data"]] == [world[2]["vm_delete"]]  # not globex's, not the older one
    detail = _get(world, f"/v1/events/{world[2]['vm_delete']}")
    assert detail["target"] == {"type": "vm", "id": "vm-7f3a", "name": "train-a100-4"}
    assert detail["detail"]["before"]["flavor"] == "a100.4x"
    assert detail["actor"]["email"] == "intern@acme.example"
    assert detail["action_label"] == "Delete VM"
    # the workspace admin of ml-research finds it as well; the other org never does
    admin = _get(world, "/v1/events", {"action": "vm.delete", "start": ts(240), "end": ts(120)},
                 role="workspace_admin", workspaces=["ml-research"])
    assert [e["event_id"] for e in admin["data"]] == [world[2]["vm_delete"]]
    kw = _get(world, "/v1/events", {"q": "TRAIN-a100-4"})["data"]  # case-insensitive, across target and description
    assert [e["event_id"] for e in kw] == [world[2]["vm_delete"]]
    other = _get(world, "/v1/events", {"q": "train-a100-4"}, org="globex")
    assert other["data"] == []


def test_diagnosing_a_cost_spike(world: Any) -> None:
    """Category = resource create in the billing window: who created the large instances."""
    page = _get(world, "/v1/events", {"category": "vm", "action": "vm.create", "start": ts(60 * 49),
                                      "end": ts(60 * 47)})
    flavors = {(e["actor"]["email"], e["detail"]["request"]["flavor"]) for e in page["data"]}
    assert flavors == {("kim@acme.example", "a100.8x"), ("lee@acme.example", "cpu.4c16g"),
                       ("kim@acme.example", "h100.8x"), ("park@acme.example", "l40s.2x")}
    large = [e for e in page["data"] if e["detail"]["request"]["flavor"].endswith("8x")]
    assert {e["actor"]["email"] for e in large} == {"kim@acme.example"}
    assert all(e["status"] == "SUCCESS" for e in page["data"])


def test_monitoring_suspicious_sign_ins(world: Any) -> None:
    """Password/OTP failures; repeated occurrences from the same e-mail or IP via stats group_by."""
    params = {"scope": "authentication", "category": "sign_in",
              "action": ["sign_in.password_failure", "sign_in.otp_failure"], "start": ts(24 * 60), "end": ts(0)}
    by_email = _get(world, "/v1/stats", {**params, "group_by": "actor_email", "interval": "hour", "top": 5})
    assert by_email["top"][0]["key"] == "victim@acme.example"
    assert by_email["top"][0]["failed"] == by_email["top"][0]["total"] == 15
    assert by_email["top"][1]["key"] == "typo@acme.example" and by_email["top"][1]["total"] == 2
    by_ip = _get(world, "/v1/stats", {**params, "group_by": "ip", "interval": "hour"})
    assert by_ip["top"][0] == {**by_ip["top"][0], "key": "203.0.113.66", "total": 15}
    assert by_ip["failed"] >= 17 and sum(b["failed"] for b in by_ip["buckets"]) == by_ip["failed"]
    page = _get(world, "/v1/events", {**params, "actor_email": "victim@acme.example", "limit": 100})
    assert len(page["data"]) == 15 and {e["actor"]["ip"] for e in page["data"]} == {"203.0.113.66"}
    # keyword search by label ("Password Failure" is a label, not stored in rows)
    kw = _get(world, "/v1/events", {"q": "password failure", "actor_email": "victim@acme.example", "limit": 100})
    assert len(kw["data"]) == 12


def test_auditing_api_token_usage(world: Any) -> None:
    page = _get(world, "/v1/events", {"category": "access_token",
                                      "action": ["access_token.create", "access_token.delete"]})
    mine = [e for e in page["data"] if e["target"]["id"] == world[2]["tok"]]
    assert [e["action"] for e in mine] == ["access_token.delete", "access_token.create"]  # newest first
    assert _get(world, "/v1/events", {"target": "ci-deploy"})["data"][0]["target"]["id"] == "tok-9a1"
    # a workspace admin does not see organization-level token events
    assert _get(world, "/v1/events", {"target": "tok-9a1"}, role="workspace_admin",
                workspaces=["ml-research"])["data"] == []


def test_verifying_policy_attachments(world: Any) -> None:
    page = _get(world, "/v1/events", {"scope": "organization", "category": "policy", "action": "policy.attach"})
    assert world[2]["policy"] in [e["event_id"] for e in page["data"]]
    kw = _get(world, "/v1/events", {"q": "AdminAccess"})
    assert [e["event_id"] for e in kw["data"]] == [world[2]["policy"]]
    assert kw["data"][0]["detail"]["principal"]["id"] == "u-lee"


def test_tracing_quota_changes(world: Any) -> None:
    params = {"scope": "workspace", "category": "gpu_quota", "action": "gpu_quota.change"}
    for tok in ({}, {"role": "workspace_admin", "workspaces": ["ml-research"]}):
        page = _get(world, "/v1/events", params, **tok)
        assert world[2]["quota"] in [e["event_id"] for e in page["data"]]
    ev = _get(world, f"/v1/events/{world[2]['quota']}")
    assert ev["detail"] == {"before": {"a100": 8}, "after": {"a100": 16}}
    # a workspace admin of another workspace does not see it
    other = _get(world, "/v1/events", params, role="workspace_admin", workspaces=["inference-prod"])
    assert world[2]["quota"] not in [e["event_id"] for e in other["data"]]


def test_histogram_and_export_of_the_filtered_view(world: Any) -> None:
    client, settings, _ = world
    params = {"scope": "service", "start": ts(60 * 24 * 5), "end": ts(0)}
    stats = _get(world, "/v1/stats", {**params, "interval": "day"})
    r = client.get("/v1/events/export", params={**params, "format": "ndjson"}, headers=auth(token(settings)))
    assert r.status_code == 200
    lines = r.text.splitlines()
    assert len(lines) == stats["total"] > 0
