"""Who read, behind a proxy: the self-audit records the connecting address, and ``X-Forwarded-For`` only from the
proxies listed in ``AUDITLOG_API_FORWARDED_ALLOW_IPS`` (default: none). Black box: a real ``auditlog api`` and a
real ``auditlog up`` process; requests come from 127.0.0.1 and from 127.0.0.2 (a second loopback source address
plays the proxy), and the recorded ``actor.ip`` of each read's ``audit_log.list`` event is checked (on the topic
for ``api``, through the API once stored for ``up``). uvicorn's own ``FORWARDED_ALLOW_IPS=*`` in the environment
must change nothing."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from auditlogkit.query_api.security.auth import mint_token
from auditlogkit.server.broker import EmbeddedBroker, ensure_topics, free_port
from tests.integration.test_api_cli import _readyz, api_process
from tests.updemo import start_up_demo, stop_up_demo

SECRET = "client-ip-secret-0123456789abcdef0123456789"
PROXY = "127.0.0.2"  # the listed proxy; 127.0.0.1 is a client that is not one
LISTED = "127.0.0.2/31"  # a CIDR: 127.0.0.2 and 127.0.0.3


def requests_(marker: str) -> list[tuple[str, str, str]]:
    """(source address, X-Forwarded-For, q filter) of the reads sent."""
    return [("127.0.0.1", "203.0.113.9", f"{marker}-direct"),  # a client forging the header
            (PROXY, "198.51.100.7", f"{marker}-proxied"),  # the proxy naming its client
            (PROXY, "198.51.100.8, 127.0.0.3", f"{marker}-chain"),  # through two listed proxies
            (PROXY, "203.0.113.66, 198.51.100.9", f"{marker}-prepended")]  # the client prepended a made-up IP


#: the IP recorded for each of :func:`requests_`, with the proxy listed / with nothing listed
WHEN_LISTED = ["127.0.0.1", "198.51.100.7", "198.51.100.8", "198.51.100.9"]
WHEN_NOT_LISTED = ["127.0.0.1", PROXY, PROXY, PROXY]


def send_reads(base: str, tok: str, marker: str) -> None:
    for source, xff, q in requests_(marker):
        with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=15) as c:
            r = c.get(f"{base}/v1/events", params={"q": q},
                      headers={"Authorization": f"Bearer {tok}", "X-Forwarded-For": xff, "User-Agent": "client-ip-test"})
            assert r.status_code == 200, (source, r.status_code, r.text)


def recorded_ips(events: list[dict[str, Any]], marker: str) -> list[str | None] | None:
    """The actor.ip of each read of :func:`requests_` (in order), None until all are there."""
    by_q = {e["detail"]["filters"].get("q"): e["actor"]["ip"] for e in events
            if e["action"] == "audit_log.list" and isinstance(e.get("detail"), dict)
            and isinstance(e["detail"].get("filters"), dict)}
    wanted = [q for _, _, q in requests_(marker)]
    return [by_q[q] for q in wanted] if all(q in by_q for q in wanted) else None


@pytest.mark.parametrize("allow", [None, LISTED], ids=["nothing-listed", "proxy-listed"])
def test_api_believes_x_forwarded_for_only_from_listed_proxies(broker: EmbeddedBroker, tmp_path: Path,
                                                               allow: str | None) -> None:
    from tests.consumer_helpers import read_topic

    topic = f"client-ip.{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(broker.bootstrap, [topic], 1))
    env = {**os.environ, "AUDITLOG_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}", "AUDITLOG_JWT_SECRET": SECRET,
           "AUDITLOG_KAFKA_BOOTSTRAP": broker.bootstrap, "AUDITLOG_TOPIC": topic, "FORWARDED_ALLOW_IPS": "*"}
    env.pop("AUDITLOG_API_FORWARDED_ALLOW_IPS", None)
    if allow is not None:
        env["AUDITLOG_API_FORWARDED_ALLOW_IPS"] = allow
    marker = uuid.uuid4().hex[:10]
    with api_process(env) as (port, _):
        deadline = time.monotonic() + 60
        while _readyz(port)["self_audit"] != "ok":
            assert time.monotonic() < deadline, "self-audit producer did not attach"
            time.sleep(0.3)
        tok = mint_token(SECRET, sub="u-ip", email="ip@acme.example", org_id="acme", role="org_owner")
        send_reads(f"http://127.0.0.1:{port}", tok, marker)
        deadline = time.monotonic() + 30
        while (got := recorded_ips([json.loads(m.value) for m in asyncio.run(read_topic(broker.bootstrap, topic))],
                                   marker)) is None:
            assert time.monotonic() < deadline, "the reads' audit events were not published"
            time.sleep(0.5)
    assert got == (WHEN_LISTED if allow else WHEN_NOT_LISTED)


def test_up_believes_listed_proxies_and_prints_tokens_with_aud_and_iss(tmp_path: Path) -> None:
    """``auditlog up`` with the audience/issuer configured (as docs/security.md recommends) and a listed proxy:
    the printed demo tokens carry ``aud``/``iss`` and are accepted, and the stored audit events of reads show the
    client the listed proxy named, and 127.0.0.1 for a direct client that sent the header."""
    aud, iss = "auditlog-api", "https://id.example.test/"
    up = start_up_demo(tmp_path / "data", free_port(), free_port(), env={
        "AUDITLOG_JWT_AUDIENCE": aud, "AUDITLOG_JWT_ISSUER": iss, "AUDITLOG_API_FORWARDED_ALLOW_IPS": LISTED,
        "FORWARDED_ALLOW_IPS": "*"})
    try:
        base = up.url.rstrip("/")
        for tok in (up.owner_token, up.admin_token):
            claims = jwt.decode(tok, options={"verify_signature": False})
            assert (claims.get("aud"), claims.get("iss")) == (aud, iss)
            r = httpx.get(f"{base}/v1/events", params={"limit": 1}, headers={"Authorization": f"Bearer {tok}"},
                          timeout=15)
            assert r.status_code == 200, r.text
        marker = uuid.uuid4().hex[:10]
        send_reads(base, up.owner_token, marker)
        deadline = time.monotonic() + 60
        while True:
            r = httpx.get(f"{base}/v1/events", params={"action": "audit_log.list", "limit": 1000,
                                                         "start": "2020-01-01T00:00:00Z"},
                          headers={"Authorization": f"Bearer {up.owner_token}"}, timeout=15)
            assert r.status_code == 200, r.text
            if (got := recorded_ips(r.json()["data"], marker)) is not None:
                break
            assert time.monotonic() < deadline, "the reads' audit events were not stored"
            time.sleep(0.5)
        assert got == WHEN_LISTED
    finally:
        assert stop_up_demo(up) == 0
