"""What a producer reads from the environment (``AUDITLOG_*``): how to reach Kafka, or the HTTP ingest instead.

Contract: :class:`KafkaSettings` is the one definition of the ``AUDITLOG_KAFKA_*`` settings and ``AUDITLOG_TOPIC``
(the server's :class:`auditlogkit.server.settings.Settings` extends it); :class:`ProducerSettings` adds what only a
service's producer needs. A broken combination (SASL without its credentials, a certificate without its key, a
file that does not exist) is refused when the settings are read, naming the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUDITLOG_", extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="Kafka SASL mechanism (with SASL_*): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str | None = Field(None, description="Kafka SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="Kafka SASL password.")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) that signs the brokers' certificates (SSL, SASL_SSL; default: the system's).")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Private key (PEM) of the client certificate.")
    kafka_ssl_check_hostname: bool = Field(True, description="Check that a broker's certificate names its host.")
    topic: str = Field("audit.events", description="Topic the producers publish events to.")

    @model_validator(mode="after")
    def _kafka_security(self) -> Self:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(f"AUDITLOG_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                             "AUDITLOG_KAFKA_SASL_MECHANISM, AUDITLOG_KAFKA_SASL_USERNAME and AUDITLOG_KAFKA_SASL_PASSWORD")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("AUDITLOG_KAFKA_SSL_CERTFILE and AUDITLOG_KAFKA_SSL_KEYFILE go together (mutual TLS)")
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"AUDITLOG_{name.upper()}: {path} is not a readable file")
        return self


class ProducerSettings(KafkaSettings):
    """A service's producer: Kafka (``AUDITLOG_KAFKA_*``) unless ``AUDITLOG_INGEST_URL`` is set, then HTTP."""

    ingest_url: str | None = Field(
        None, description="SDK: the audit log's API (e.g. https://audit.example.com); set, events go to POST "
        "/v1/ingest with AUDITLOG_INGEST_TOKEN instead of Kafka.")
    ingest_token: SecretStr | None = Field(
        None, description="SDK: the service token (role service, audit:write) for AUDITLOG_INGEST_URL.")
    source: str | None = Field(None, description="SDK: the `source` of the events this service sends (its name).")
    exit_timeout_seconds: float = Field(
        5.0, ge=0, description="SDK: how long the sync producer waits at interpreter exit to deliver what it holds.")

    @model_validator(mode="after")
    def _http(self) -> Self:
        if self.ingest_url is not None:
            if not self.ingest_url.startswith(("https://", "http://")):
                raise ValueError("AUDITLOG_INGEST_URL must be an http(s) URL")
            if self.ingest_token is None or not self.ingest_token.get_secret_value():
                raise ValueError("AUDITLOG_INGEST_URL needs AUDITLOG_INGEST_TOKEN (a service token with audit:write)")
        return self

    @property
    def transport(self) -> Literal["kafka", "http"]:
        return "http" if self.ingest_url else "kafka"
