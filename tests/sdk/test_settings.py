"""``AuditProducer.from_env()`` honours every ``AUDITLOG_KAFKA_*`` setting (the same definition the server reads)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from auditlogkit import AuditProducer
from auditlogkit.settings import KafkaSettings, ProducerSettings
from auditlogkit.transport import KafkaTransport


async def test_kafka_tls_and_sasl_reach_the_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"  # a private CA bundle (here: a copy of the system's)
    ca.write_bytes(Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt").read_bytes())
    for k, v in {"KAFKA_BOOTSTRAP": "k1:9093,k2:9093", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                 "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "pw",
                 "KAFKA_SSL_CAFILE": str(ca), "KAFKA_SSL_CHECK_HOSTNAME": "false", "TOPIC": "audit.other"}.items():
        monkeypatch.setenv(f"AUDITLOG_{k}", v)
    audit = AuditProducer.from_env()
    assert isinstance(audit.transport, KafkaTransport) and audit.transport.topic == "audit.other"
    c = audit.transport.producer.client
    assert (c._bootstrap_servers, c._security_protocol, c._sasl_mechanism, c._sasl_plain_username,
            c._sasl_plain_password) == ("k1:9093,k2:9093", "SASL_SSL", "SCRAM-SHA-512", "svc", "pw")
    assert isinstance(c._ssl_context, ssl.SSLContext) and c._ssl_context.check_hostname is False


@pytest.mark.parametrize(("env", "message"), [
    ({"AUDITLOG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "AUDITLOG_KAFKA_SASL_MECHANISM"),
    ({"AUDITLOG_KAFKA_SSL_CERTFILE": "/etc/hostname"}, "go together"),
    ({"AUDITLOG_KAFKA_SSL_CAFILE": "/no/such/file"}, "not a readable file"),
    ({"AUDITLOG_INGEST_URL": "ftp://x", "AUDITLOG_INGEST_TOKEN": "t"}, "http"),
])
def test_broken_settings_are_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                         message: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=message):
        ProducerSettings()


def test_the_server_reads_the_same_kafka_settings() -> None:
    from auditlogkit.server.settings import Settings

    assert issubclass(Settings, KafkaSettings)
    assert set(KafkaSettings.model_fields) <= set(Settings.model_fields)
