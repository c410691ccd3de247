"""The composition root (:mod:`auditlogkit.server.app.compose`): the commands build their producers one way, from
:class:`~auditlogkit.kafka.KafkaConnection`, so TLS / SASL reach every producer, with the linger of its role, and
every part gets the operator's catalog. (The migrations with that catalog: tests/integration/test_compose.py.)"""

from __future__ import annotations

import ast
import json
import ssl
from pathlib import Path
from typing import Any

from auditlogkit import AuditProducer
from auditlogkit.server.app.cli_api import REQUEST_TIMEOUT_MS, api_producers
from auditlogkit.server.app.compose import INGEST_LINGER_MS, Composition
from auditlogkit.server.settings import Settings
from auditlogkit.transport import KafkaTransport

ROOT = Path(__file__).resolve().parents[2]
SASL_SSL = {"kafka_bootstrap": "k1:9093,k2:9093", "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "svc", "kafka_sasl_password": "pw"}


def _kafka(p: AuditProducer) -> Any:
    assert isinstance(p.transport, KafkaTransport)
    return p.transport.producer


def _client(p: AuditProducer) -> dict[str, Any]:
    """What the producer's aiokafka client was given (its private attributes: there is no public accessor)."""
    assert isinstance(p.transport, KafkaTransport)
    c = p.transport.producer.client
    return {"bootstrap": c._bootstrap_servers, "protocol": c._security_protocol, "mechanism": c._sasl_mechanism,
            "user": c._sasl_plain_username, "password": c._sasl_plain_password, "ssl": c._ssl_context,
            "timeout_ms": c._request_timeout_ms}


def test_only_the_composition_root_constructs_producers() -> None:
    """No command builds an ``AuditProducer`` of its own: ``up``, ``api`` and ``emit`` take theirs from compose."""
    builders = []
    for pkg in ("auditlog", "consumers", "query_api"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call):
                    f = node.func
                    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                    if name == "AuditProducer":
                        builders.append(path.relative_to(ROOT).as_posix())
    assert sorted(set(builders)) == ["auditlog/app/compose.py"]


async def test_tls_and_sasl_reach_the_api_producers_with_their_lingers() -> None:
    from auditlogkit.query_api.security.self_audit import PRODUCER_LINGER_MS

    parts = Composition(Settings(**SASL_SSL))
    make_audit, make_ingest = api_producers(parts)
    audit, ingest = make_audit(), make_ingest()
    try:
        for p in (audit, ingest):
            got = _client(p)
            assert isinstance(got.pop("ssl"), ssl.SSLContext)
            assert got == {"bootstrap": "k1:9093,k2:9093", "protocol": "SASL_SSL", "mechanism": "SCRAM-SHA-512",
                           "user": "svc", "password": "pw", "timeout_ms": REQUEST_TIMEOUT_MS}
            assert p.catalog is parts.catalog
        assert _kafka(audit)._message_accumulator._linger_time == PRODUCER_LINGER_MS / 1000
        assert _kafka(ingest)._message_accumulator._linger_time == INGEST_LINGER_MS / 1000
    finally:
        for p in (audit, ingest):
            await p.stop()


async def test_every_role_gets_the_same_connection_and_catalog(tmp_path: Path) -> None:
    """``up`` (its own broker), ``api`` and ``emit`` (a topic of their choosing): one connection, one catalog."""
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"scopes": [{"code": "service", "label": "Compute", "categories": [
        {"code": "vm", "label": "VM", "actions": [{"code": "vm.delete", "label": "Destroy VM"}]}]}]}))
    parts = Composition(Settings(**SASL_SSL, catalog_extra=str(extra)), bootstrap="127.0.0.1:9092")
    assert parts.catalog.labels("service", "vm.delete") == ("Compute", "VM", "Destroy VM")
    ingest = parts.producer_options(topic="other")
    audit = parts.producer_options(self_audit=True)
    for opts in (ingest, audit):
        assert isinstance(opts.pop("ssl_context"), ssl.SSLContext)
        assert opts.pop("catalog") is parts.catalog
    assert ingest == {"bootstrap_servers": "127.0.0.1:9092", "topic": "other", "linger_ms": INGEST_LINGER_MS,
                      "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                      "sasl_plain_username": "svc", "sasl_plain_password": "pw"}
    assert audit == {**ingest, "topic": "audit.events", "linger_ms": 1}
    p = parts.ingest_producer()
    try:
        assert _client(p)["protocol"] == "SASL_SSL" and p.topic == "audit.events"
    finally:
        await p.stop()
