"""`auditlog up --demo` as a new user runs it: a subprocess on loopback, real broker, real chDB, real API.

Covers: the page answers within 30 s, the owner sees the demo events and a workspace admin only its workspaces;
a plain Kafka client that is not ours gets a valid event visible within 3 s and invalid ones onto the DLQ with a
reason while the consumer keeps running; a restart of `up` keeps the data and keeps ingesting.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer

from auditlog.app.demo import DEMO_ADMIN_WORKSPACES
from auditlog.broker import free_port
from tests.factories import make_event
from tests.updemo import UpDemo, start_up_demo, stop_up_demo


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("up-data")


@pytest.fixture(scope="module")
def up(data_dir: Path) -> Iterator[UpDemo]:
    u = start_up_demo(data_dir, free_port(), free_port())
    yield u
    stop_up_demo(u)


def get(up: UpDemo, path: str, token: str, **params: object) -> httpx.Response:
    return httpx.get(up.url.rstrip("/") + path, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_page_answers_within_30s(up: UpDemo) -> None:
    assert up.page_s < 30, f"page URL printed after {up.page_s:.1f}s"
    r = httpx.get(up.url, timeout=5)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]


def test_owner_sees_demo_events_and_admin_only_its_workspaces(up: UpDemo) -> None:
    start = "2020-01-01T00:00:00Z"
    owner = get(up, "/v1/events", up.owner_token, start=start, limit=1000).json()["data"]
    assert len(owner) == 1000
    assert {e["org_id"] for e in owner} == {"acme"}
    owner_ws = {e["workspace_id"] for e in owner}
    allowed = set(DEMO_ADMIN_WORKSPACES[1])
    assert owner_ws - allowed - {None}, "demo data should contain other workspaces too"
    admin = get(up, "/v1/events", up.admin_token, start=start, limit=1000).json()["data"]
    assert admin, "workspace admin sees its workspaces' events"
    assert {e["workspace_id"] for e in admin} <= allowed


def test_plain_kafka_client_valid_event_is_queryable_within_3s(up: UpDemo) -> None:
    producer = KafkaProducer(bootstrap_servers=up.bootstrap, acks="all")
    ev = make_event(org_id="acme", description=f"plain-client {uuid.uuid4()}")
    producer.send("audit.events", key=b"acme", value=json.dumps(ev).encode()).get(timeout=10)
    producer.close()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3:
        r = get(up, f"/v1/events/{ev['event_id']}", up.owner_token)
        if r.status_code == 200:
            assert r.json()["description"] == ev["description"]
            return
        time.sleep(0.1)
    raise AssertionError(f"event not visible within 3 s (last status {r.status_code})")


def test_plain_kafka_client_invalid_events_are_dead_lettered_with_reason(up: UpDemo) -> None:
    marker = uuid.uuid4().hex
    bad = {
        "unknown_action": json.dumps(make_event(action="vm.nuke", request_id=marker)).encode(),
        "bad_ip": json.dumps(make_event(actor={"ip": "300.1.2.3"}, request_id=marker)).encode(),
        "not_json": b"{this is not json " + marker.encode(),
        "too_big": json.dumps(make_event(description="x", detail={"pad": "y" * (2 * 1024 * 1024)}, request_id=marker)).encode(),
    }
    producer = KafkaProducer(bootstrap_servers=up.bootstrap, acks="all", max_request_size=8 * 1024 * 1024)
    sent = {name: producer.send("audit.events", key=name.encode(), value=v).get(timeout=10) for name, v in bad.items()}
    producer.close()
    consumer = KafkaConsumer("audit.events.dlq", bootstrap_servers=up.bootstrap, auto_offset_reset="earliest",
                             group_id=None, consumer_timeout_ms=2000, fetch_max_bytes=16 * 1024 * 1024,
                             max_partition_fetch_bytes=16 * 1024 * 1024)
    found: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + 20
    while len(found) < len(bad) and time.monotonic() < deadline:
        for rec in consumer:
            key = (rec.key or b"").decode(errors="replace")
            if key in bad and rec.value == bad[key]:
                found[key] = {k: v.decode(errors="replace") for k, v in rec.headers}
    consumer.close()
    assert set(found) == set(bad), f"dead-lettered: {sorted(found)}"
    reasons = {k: " ".join(h.values()) for k, h in found.items()}
    assert "vm.nuke" in reasons["unknown_action"]
    assert "actor.ip" in reasons["bad_ip"]
    assert "JSON" in reasons["not_json"]
    assert "larger than" in reasons["too_big"]
    for name, md in sent.items():  # provenance: source partition and offset are recorded
        assert str(md.offset) in found[name].values(), found[name]
    # the consumer kept running: a valid event after the bad ones is stored
    test_plain_kafka_client_valid_event_is_queryable_within_3s(up)


def test_restart_keeps_data_and_keeps_ingesting(up: UpDemo, data_dir: Path) -> None:
    start = "2020-01-01T00:00:00Z"
    before = len(get(up, "/v1/events", up.owner_token, start=start, limit=1000, workspace_id="ml-research").json()["data"])
    assert stop_up_demo(up) == 0
    again = start_up_demo(data_dir, free_port(), free_port())
    try:
        assert any("already in this data directory" in line for line in again.output), "".join(again.output)
        after = get(again, "/v1/events", again.owner_token, start=start, limit=1000, workspace_id="ml-research").json()["data"]
        assert len(after) == before
        # the new broker starts with empty topics; new events must still be stored after the restart
        producer = KafkaProducer(bootstrap_servers=again.bootstrap, acks="all")
        evs = [make_event(org_id="acme", description=f"after-restart {i}") for i in range(20)]
        for ev in evs:
            producer.send("audit.events", key=b"acme", value=json.dumps(ev).encode())
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 10
        missing = {e["event_id"] for e in evs}
        while missing and time.monotonic() < deadline:
            missing = {i for i in missing if get(again, f"/v1/events/{i}", again.owner_token).status_code != 200}
            time.sleep(0.2)
        assert not missing, f"{len(missing)} of 20 events published after the restart were not stored"
    finally:
        assert stop_up_demo(again) == 0
