"""The full pipeline on the server path (testcontainers; skipped without Docker): a real Kafka broker and a
ClickHouse server, schema and roles by `migrate` as admin, the consumer running as the INSERT-only writer,
the API reading as the read-only reader: produce -> consume -> query through the API."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

from auditlogkit.producer import AuditProducerSync
from auditlogkit.server.broker import ensure_topics
from auditlogkit.server.db import roles
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.factories import random_events
from tests.server.conftest import user_url

pytestmark = pytest.mark.server


def test_produce_consume_query(clickhouse_server: dict[str, Any], kafka_server: str) -> None:
    from fastapi.testclient import TestClient

    from auditlogkit.consumers.worker import ConsumerWorker
    from auditlogkit.query_api.core.app import create_app
    from auditlogkit.query_api.security.auth import mint_token

    db = f"pl_{uuid.uuid4().hex[:8]}"
    migrate(Store(clickhouse_server["admin_url"], db))
    admin = Store(clickhouse_server["admin_url"], db).admin_client()
    wpw, rpw = uuid.uuid4().hex, uuid.uuid4().hex
    for s in (roles.service_user_statements(f"w_{db}", "writer", password=wpw)
              + roles.service_user_statements(f"r_{db}", "reader", password=rpw)):
        admin.command(s)
    topic = f"audit.events.{uuid.uuid4().hex[:6]}"
    asyncio.run(ensure_topics(kafka_server, [topic, f"{topic}.dlq"], 6))
    secret = "server-test-secret-0123456789abcdef0123"
    base = dict(kafka_bootstrap=kafka_server, topic=topic, dlq_topic=f"{topic}.dlq", clickhouse_database=db,
                consumer_group=f"g-{uuid.uuid4().hex[:6]}", session_timeout_ms=6000, batch_max_seconds=0.2,
                jwt_secret=secret)
    wset = Settings(clickhouse_url=user_url(clickhouse_server, f"w_{db}", wpw), **base)
    rset = Settings(clickhouse_url=user_url(clickhouse_server, f"r_{db}", rpw), **base)

    events = random_events(300, seed=7, orgs=("acme", "globex"))
    with AuditProducerSync(kafka_server, topic) as p:
        for e in events:
            p.send(e)
        p.flush()
    worker = ConsumerWorker(wset, Store.from_settings(wset))
    t = threading.Thread(target=lambda: asyncio.run(worker.run()), daemon=True)
    t.start()
    try:
        reader = Store.from_settings(rset)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if reader.client().query("SELECT count() FROM audit_events FINAL").result_rows[0][0] == len(events):
                break
            time.sleep(0.5)
        assert reader.client().query("SELECT count() FROM audit_events FINAL").result_rows[0][0] == len(events)
        token = mint_token(secret, sub="u-1", email="kim@acme.example", org_id="acme", role="org_owner")
        with TestClient(create_app(rset, reader)) as api:
            r = api.get("/v1/events", params={"limit": 500}, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            got = {e["event_id"] for e in r.json()["data"]}
            assert got and got <= {e["event_id"] for e in events if e["org_id"] == "acme"}
    finally:
        worker.request_stop()
        t.join(60)
