"""`auditlog up --demo` as a new user runs it: a subprocess on loopback, real broker, real chDB, real API.

Covers: the page answers within 30 s, the owner sees the demo events and a workspace admin only its workspaces;
a plain Kafka client that is not ours gets a valid event visible within 3 s and invalid ones onto the DLQ with a
reason while the consumer keeps running; a restart of `up` keeps the data and keeps ingesting.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer

from auditlogkit import AuditProducer, audit_context
from auditlogkit.server.app.demo import DEMO_ADMIN_WORKSPACES
from auditlogkit.server.broker import free_port
from tests.distribution import sdk_venv
from tests.factories import make_event
from tests.updemo import AUDITLOG, UpDemo, start_up_demo, stop_up_demo


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("up-data")


@pytest.fixture(scope="module")
def up(data_dir: Path) -> Iterator[UpDemo]:
    u = start_up_demo(data_dir, free_port(), free_port())
    yield u
    stop_up_demo(u)


def get(up: UpDemo, path: str, token: str, **params: Any) -> httpx.Response:
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


# ----- the producer SDK against `up` (before the restart test, which stops this `up`) --------------------------
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"


def service_token(data_dir: Path) -> str:
    r = subprocess.run([AUDITLOG, "token", "--service", "--write-org", "acme", "--sub", "svc-sdk", "--data",
                        str(data_dir)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def stored(up: UpDemo, event_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = get(up, f"/v1/events/{event_id}", up.owner_token)
        if r.status_code == 200 or time.monotonic() > deadline:
            assert r.status_code == 200, f"{event_id} not stored: {r.status_code} {r.text[:200]}"
            return dict(r.json())
        time.sleep(0.2)


def by_target(up: UpDemo, target: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The events on ``target`` once there are any (the consumer stores them a moment after the producer's ack)."""
    deadline = time.monotonic() + timeout
    while True:
        found: list[dict[str, Any]] = get(up, "/v1/events", up.owner_token, start="2020-01-01T00:00:00Z",
                                          target=target).json()["data"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def sdk_env(up: UpDemo, data_dir: Path, transport: str) -> dict[str, str]:
    env = {"AUDITLOG_SOURCE": "vm-service"}
    if transport == "http":
        env |= {"AUDITLOG_INGEST_URL": up.origin, "AUDITLOG_INGEST_TOKEN": service_token(data_dir)}
    else:
        env |= {"AUDITLOG_KAFKA_BOOTSTRAP": up.bootstrap}
    return env


@pytest.mark.parametrize("transport", ["kafka", "http"])
async def test_the_sdk_from_the_environment_reaches_up(up: UpDemo, data_dir: Path, transport: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in sdk_env(up, data_dir, transport).items():
        monkeypatch.setenv(k, v)
    event_id = str(uuid.uuid4())
    async with AuditProducer.from_env() as audit:
        with audit_context(org_id="acme", actor_id="u-sdk", actor_type="user", ip="2001:DB8::7", request_id="rq-1"):
            await audit.send_and_wait(action="vm.delete", target={"type": "vm", "id": "vm-sdk"}, event_id=event_id)
    ev = stored(up, event_id)
    assert (ev["scope"], ev["category"], ev["status"], ev["source"]) == ("service", "vm", "SUCCESS", "vm-service")
    assert ev["actor"]["ip"] == "2001:db8::7" and ev["request_id"] == "rq-1"
    assert ev["publisher"]["via"] == transport and (transport == "kafka" or ev["publisher"]["id"] == "svc-sdk")


def test_the_sync_producer_delivers_what_it_holds_at_exit(up: UpDemo, data_dir: Path) -> None:
    """A script that sends and exits without close(): atexit delivers the event (bounded wait)."""
    event_id = str(uuid.uuid4())
    script = ("from producers import AuditProducerSync, audit_context\n"
              "audit = AuditProducerSync.from_env()\n"
              "with audit_context(org_id='acme', actor_id='u-exit', actor_type='user'):\n"
              f"    audit.send(action='vm.delete', target={{'type': 'vm', 'id': 'vm-exit'}}, event_id='{event_id}')\n")
    r = subprocess.run([sys.executable, "-c", script], env={**os.environ, **sdk_env(up, data_dir, "http")},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert stored(up, event_id)["actor"]["id"] == "u-exit"


def test_the_fastapi_example_of_docs_sdk_md(up: UpDemo, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    for k, v in sdk_env(up, data_dir, "kafka").items():
        monkeypatch.setenv(k, v)
    spec = importlib.util.spec_from_file_location("fastapi_service", EXAMPLES / "fastapi_service.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vm = f"vm-{uuid.uuid4().hex[:8]}"
    with TestClient(module.app) as c:
        r = c.delete(f"/vms/{vm}", headers={"X-User-Id": "u-fastapi", "X-Org-Id": "acme", "User-Agent": "pytest"})
    assert r.status_code == 200 and r.json() == {"deleted": vm}
    rid = r.headers["x-request-id"]
    [ev] = by_target(up, vm)
    assert (ev["actor"]["id"], ev["actor"]["user_agent"], ev["request_id"]) == ("u-fastapi", "pytest", rid)


def test_the_django_example_of_docs_sdk_md(up: UpDemo, data_dir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "django_service.py"), str(port)],
                            env={**os.environ, **sdk_env(up, data_dir, "http")}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        vm = f"vm-{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/vms/{vm}/delete", timeout=30,
                               headers={"X-User-Id": "u-django", "X-Org-Id": "acme", "X-Forwarded-For": "203.0.113.5"})
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "the example did not start"
                time.sleep(0.3)
        if r.status_code != 200:
            os.killpg(proc.pid, signal.SIGTERM)
            pytest.fail(f"{r.status_code}: {proc.communicate(timeout=10)[0][-3000:]}")
        assert r.json() == {"deleted": vm}
        [ev] = by_target(up, vm)  # durable in Kafka when the view answered; stored a moment later
        assert ev["actor"]["id"] == "u-django" and ev["actor"]["ip"] == "127.0.0.1"  # no trusted proxy: not forwarded
        assert ev["publisher"] == {"via": "http", "id": "svc-sdk"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


# ----- the SDK distribution alone, in a fresh virtualenv ---------------------------------------------------------
SERVER_ONLY = ("chdb", "fastapi", "uvicorn", "pyarrow", "pandas", "clickhouse_connect", "structlog")


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sdk_venv(tmp_path_factory.mktemp("sdk"))


def site_packages_mb(python: Path) -> float:
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    tooling = ("pip", "setuptools", "_distutils_hack", "distutils-precedence.pth")  # the venv's own, not ours
    return sum(f.stat().st_size for p in site.iterdir() if not p.name.startswith(tooling)
               for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()) / 2**20


def test_the_sdk_distribution_is_light_and_collides_with_nothing(sdk_python: Path, tmp_path: Path) -> None:
    size = site_packages_mb(sdk_python)
    print(f"SDK install with its dependencies: {size:.1f} MB")
    assert size < 50
    (tmp_path / "schemas.py").write_text("WHO = 'the service'\n")  # a service's own schemas.py ...
    (tmp_path / "auditlog").mkdir()  # ... and django-auditlog's import name
    (tmp_path / "auditlog" / "__init__.py").write_text("WHO = 'django-auditlog'\n")
    script = ("import importlib.util, schemas, auditlog\n"
              "from auditlogkit import AuditProducer, AuditEvent\n"
              "assert (schemas.WHO, auditlog.WHO) == ('the service', 'django-auditlog')\n"
              f"print(sorted(m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m)))\n")
    r = subprocess.run([str(sdk_python), "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"server dependencies installed with the SDK: {r.stdout}"
    cli = subprocess.run([str(sdk_python.parent / "auditlog"), "up"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and "pip install 'auditlogkit[server]'" in cli.stderr  # says what to install


@pytest.mark.parametrize("transport", ["kafka", "http"])
def test_the_sdk_distribution_publishes_to_up(up: UpDemo, data_dir: Path, sdk_python: Path, transport: str,
                                               tmp_path: Path) -> None:
    event_id = str(uuid.uuid4())
    script = ("import asyncio\n"
              "from auditlogkit import AuditProducer, audit_context\n"
              "async def main():\n"
              "    async with AuditProducer.from_env() as audit:\n"
              "        with audit_context(org_id='acme', actor_id='u-dist', actor_type='user'):\n"
              "            await audit.send_and_wait(action='vm.delete', target={'type': 'vm', 'id': 'vm-dist'},\n"
              f"                                      event_id='{event_id}')\n"
              "asyncio.run(main())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITLOG_")} | sdk_env(up, data_dir, transport)
    r = subprocess.run([str(sdk_python), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    ev = stored(up, event_id)
    assert ev["actor"]["id"] == "u-dist" and ev["publisher"]["via"] == transport


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
