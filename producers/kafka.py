"""How every Kafka client of ours connects: bootstrap servers plus TLS / SASL, from one place.

Contract: :class:`KafkaConnection` holds the connection facts of :class:`auditlogkit.settings.KafkaSettings`
(``AUDITLOG_KAFKA_*``, also the server's settings); :func:`kafka_options` turns a connection, or a bare bootstrap string (tests, the embedded
Tansu broker: plaintext on loopback), into the keyword arguments of aiokafka's ``AIOKafkaConsumer``,
``AIOKafkaProducer`` and ``AIOKafkaAdminClient``. Every client the consumer, the DLQ tools, the API's self-audit
producer, ``auditlog emit`` and a service's ``AuditProducer.from_env()`` create takes its arguments from here, so a production cluster with TLS or SASL
works for all of them or for none.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditlogkit.settings import KafkaSettings


@dataclass(frozen=True)
class KafkaConnection:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True

    @classmethod
    def from_settings(cls, s: KafkaSettings, bootstrap: str | None = None) -> KafkaConnection:
        return cls(
            bootstrap=bootstrap or s.kafka_bootstrap,
            security_protocol=s.kafka_security_protocol,
            sasl_mechanism=s.kafka_sasl_mechanism,
            sasl_username=s.kafka_sasl_username,
            sasl_password=s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password else None,
            ssl_cafile=s.kafka_ssl_cafile,
            ssl_certfile=s.kafka_ssl_certfile,
            ssl_keyfile=s.kafka_ssl_keyfile,
            ssl_check_hostname=s.kafka_ssl_check_hostname,
        )

    def __str__(self) -> str:  # logs and messages: never the password
        return self.bootstrap if self.security_protocol == "PLAINTEXT" else f"{self.bootstrap} ({self.security_protocol})"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for SSL / SASL_SSL (system CAs unless ``ssl_cafile``), else None."""
        if not self.security_protocol.endswith("SSL"):
            return None
        ctx = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        ctx.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile is not None:
            ctx.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None)
        return ctx

    def security_options(self) -> dict[str, Any]:
        """aiokafka keyword arguments for TLS / SASL (empty for PLAINTEXT)."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        opts: dict[str, Any] = {"security_protocol": self.security_protocol}
        ctx = self.ssl_context()
        if ctx is not None:
            opts["ssl_context"] = ctx
        if self.security_protocol.startswith("SASL_"):
            opts.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                        sasl_plain_password=self.sasl_password)
        return opts


def kafka_options(kafka: str | KafkaConnection) -> dict[str, Any]:
    """``bootstrap_servers`` plus the security options, for any aiokafka client constructor."""
    if isinstance(kafka, str):
        return {"bootstrap_servers": kafka}
    return {"bootstrap_servers": kafka.bootstrap, **kafka.security_options()}
