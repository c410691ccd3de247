"""``auditlog export`` (store mode and HTTP mode) and ``auditlog api`` (a real uvicorn process)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from auditlogkit.query_api.core.app import create_app
from auditlogkit.query_api.security.auth import mint_token
from auditlogkit.server.app.cli import main
from auditlogkit.server.broker import EmbeddedBroker, free_port
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import make_event, random_events
from tests.integration.test_api_helpers import store_events, token


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("AUDITLOG_CLICKHOUSE_URL", settings.store_url)
    monkeypatch.setenv("AUDITLOG_CLICKHOUSE_DATABASE", settings.clickhouse_database)
    monkeypatch.setenv("AUDITLOG_JWT_SECRET", settings.jwt_secret or "")
    return settings


def _expected(evs: list[dict], org: str, ws: str | None = None, scope: str | None = None) -> set[str]:
    return {e["event_id"] for e in evs if e["org_id"] == org and (ws is None or e["workspace_id"] == ws)
            and (scope is None or e["scope"] == scope)}


def test_export_from_the_store(env: Settings, store: Store, tmp_path: Path) -> None:
    evs = random_events(600, seed=21, orgs=("acme", "globex"), days=5)
    store_events(store, evs)
    out = tmp_path / "all.csv"
    assert main(["export", "--org", "acme", "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    assert {r["event_id"] for r in rows} == _expected(evs, "acme") and len(rows) == len(_expected(evs, "acme"))
    out2 = tmp_path / "ws.ndjson"
    assert main(["export", "--org", "acme", "--workspace", "acme-ws1", "--scope", "service", "--format", "ndjson",
                 "-o", str(out2)]) == 0
    got = [json.loads(line) for line in out2.read_text().splitlines()]
    assert {e["event_id"] for e in got} == _expected(evs, "acme", "acme-ws1", "service")
    assert main(["export", "--org", "acme", "--scope", "bill", "-o", str(tmp_path / "x")]) == 1


def test_export_from_the_store_validates_filters_like_the_api(env: Settings, store: Store, tmp_path: Path) -> None:
    ev = make_event(actor={"ip": "2001:db8::1"})
    store_events(store, [ev])
    out = tmp_path / "ip.ndjson"
    # the ip filter is compared in its normalised form, as the API does
    assert main(["export", "--org", "acme", "--ip", "2001:DB8:0::1", "--format", "ndjson", "-o", str(out)]) == 0
    assert [json.loads(line)["event_id"] for line in out.read_text().splitlines()] == [ev["event_id"]]
    for bad in (["--ip", "not-an-ip"], ["--status", "failed"],
                ["--start", "2026-01-02T00:00:00Z", "--end", "2026-01-01T00:00:00Z"]):
        assert main(["export", "--org", "acme", *bad, "-o", str(tmp_path / "x")]) == 1, bad


@pytest.fixture
def served(env: Settings, store: Store) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(env, store), host="127.0.0.1", port=port, log_config=None))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(10)


def test_export_through_the_api(env: Settings, store: Store, served: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    evs = random_events(400, seed=22, orgs=("acme", "globex"), days=5)
    store_events(store, evs)
    monkeypatch.chdir(tmp_path)
    tok = token(env, role="workspace_admin", workspaces=["acme-ws2"])
    assert main(["export", "--url", served, "--token", tok]) == 0
    files = list(tmp_path.glob("audit-log-*.csv"))
    assert len(files) == 1  # the server's Content-Disposition name
    rows = list(csv.DictReader(files[0].open(newline="", encoding="utf-8")))
    assert {r["event_id"] for r in rows} == _expected(evs, "acme", "acme-ws2")
    assert main(["export", "--url", served, "--token", tok, "--workspace-id", "acme-ws1"]) == 1  # 403
    assert main(["export", "--url", served, "--token", "bad"]) == 1  # 401
    # a range too long for per-day stats (> 10,000 days): exported anyway, the progress bar without a total
    out = tmp_path / "all.ndjson"
    assert main(["export", "--url", served, "--token", tok, "--start", "1970-01-02T00:00:00Z", "--format", "ndjson",
                 "-o", str(out)]) == 0
    assert {json.loads(line)["event_id"] for line in out.read_text().splitlines()} == _expected(evs, "acme", "acme-ws2")


@contextmanager
def api_process(env: dict[str, str]) -> Iterator[tuple[int, dict]]:
    """``auditlog api`` as its own process on a free port; yields (port, first /readyz body) once it answers;
    stopped by PID (SIGTERM) and must exit 0."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "auditlogkit.server.app.cli", "api", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                body = _readyz(port)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.3)
        yield port, body
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0


def test_api_command_serves(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """``auditlog api`` as its own process on its own chDB directory; stopped by PID."""
    env = {**os.environ, "AUDITLOG_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}", "AUDITLOG_JWT_SECRET": "x" * 32,
           "AUDITLOG_KAFKA_BOOTSTRAP": broker.bootstrap}
    with api_process(env) as (port, ready):
        assert ready["store"] == "ok"
        tok = mint_token("x" * 32, sub="u-1", email="kim@acme.example", org_id="acme", role="org_owner")
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/catalog", headers={"Authorization": f"Bearer {tok}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["scopes"]


def _readyz(port: int) -> dict:
    """The /readyz body, green (200) or red (503)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise
        return json.loads(exc.read())


def test_api_serves_while_kafka_is_down_and_audits_reads_once_it_is_up(tmp_path: Path) -> None:
    """Kafka unreachable at start: reads are refused (503 ``audit_unavailable``, ``/readyz`` red with
    ``self_audit: connecting``); when the broker appears the producer attaches by itself (``ok``) and a list call
    is served and published as an ``audit_log.list`` event."""
    import asyncio

    from auditlogkit.query_api.security.auth import mint_token
    from auditlogkit.server.broker import ensure_topics
    from tests.consumer_helpers import read_topic

    kafka_port, secret, topic = free_port(), "k" * 32, "api.selfaudit"
    env = {**os.environ, "AUDITLOG_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}", "AUDITLOG_JWT_SECRET": secret,
           "AUDITLOG_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}", "AUDITLOG_TOPIC": topic}
    with api_process(env) as (port, body):
        assert body["status"] == "unavailable" and body["store"] == "ok" and body["self_audit"] == "connecting"
        tok = mint_token(secret, sub="u-1", email="kim@acme.example", org_id="acme", role="org_owner")
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/events", headers={"Authorization": f"Bearer {tok}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 503  # not served: it could not be recorded
        assert json.loads(refused.value.read())["error"]["code"] == "audit_unavailable"

        with EmbeddedBroker(port=kafka_port) as b:
            asyncio.run(ensure_topics(b.bootstrap, [topic], 1))
            deadline = time.monotonic() + 60
            while _readyz(port)["self_audit"] != "ok":
                assert time.monotonic() < deadline, "self-audit producer did not attach"
                time.sleep(0.5)
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/events?status=FAILED",
                                         headers={"Authorization": f"Bearer {tok}"})
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200
            deadline = time.monotonic() + 30
            while True:
                events = [json.loads(m.value) for m in asyncio.run(read_topic(b.bootstrap, topic))]
                if any(e["action"] == "audit_log.list" and e["detail"]["filters"].get("status") == "FAILED"
                       for e in events):
                    break
                assert time.monotonic() < deadline, events
                time.sleep(0.5)
