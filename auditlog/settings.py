"""All settings in one place, read from ``AUDITLOG_*`` environment variables (and CLI flags that override them).

Every field's description is what ``auditlog --help`` and the README show; add new settings here only.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUDITLOG_", extra="ignore")

    data_dir: Path = Field(Path(".auditlog"), description="Directory for the embedded store (chDB) and state.")
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated.")
    topic: str = Field("audit.events", description="Topic the producers publish events to.")
    dlq_topic: str = Field("audit.events.dlq", description="Dead-letter topic for invalid messages.")
    topic_partitions: int = Field(6, ge=1, description="Partitions when auditlog creates the topics.")
    consumer_group: str = Field("auditlog-consumer", description="Kafka consumer group of the workers.")
    clickhouse_url: str | None = Field(
        None,
        description="ClickHouse: 'chdb:///abs/dir' (embedded, default <data_dir>/chdb) or "
        "'http(s)://user:password@host:port' for a server.",
    )
    clickhouse_database: str = Field("auditlog", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Database name.")
    retention_days: int = Field(400, ge=1, description="TTL of events in days (applied by migrate).")
    catalog_extra: str | None = Field(None, description="Path of an operator's extra catalog JSON file.")
    batch_max_rows: int = Field(50_000, ge=1, description="Consumer flushes a batch at this many rows ...")
    batch_max_seconds: float = Field(1.0, gt=0, description="... or when its oldest message is this old.")
    max_inflight_rows: int = Field(200_000, ge=1, description="Consumer pauses fetching above this many buffered rows.")
    session_timeout_ms: int = Field(10_000, ge=1000, description="Kafka consumer group session timeout.")
    consumer_metrics_host: str = Field("127.0.0.1", description="Bind address of `auditlog consume`'s /metrics and /readyz.")
    consumer_metrics_port: int = Field(9464, ge=0, le=65535, description="Port of `auditlog consume`'s /metrics and /readyz (0: none).")
    consumer_max_poll_records: int = Field(5_000, ge=1, description="Consumer: most records taken per fetch (getmany).")
    consumer_dedup: bool = Field(True, description="Consumer: insert dedup tokens and offset watermarks (off only to measure their cost).")
    consumer_retry_max_seconds: float = Field(30.0, gt=0, description="Consumer: cap of the store/DLQ retry backoff.")
    consumer_shutdown_timeout_s: float = Field(30.0, gt=0, description="Consumer: most time to flush and commit on stop.")
    consumer_stall_seconds: float = Field(60.0, gt=0, description="Consumer readiness turns red after this long without a commit while lag grows.")
    dlq_limit_ratio: float = Field(0.5, gt=0, le=1, description="Consumer stops if more than this share of the last window is invalid (1 = never).")
    dlq_limit_window: int = Field(1_000, ge=1, description="Consumer: messages in the DLQ-rate window.")
    jwt_secret: str | None = Field(None, description="HS256 secret for API tokens.")
    jwt_public_key_file: str | None = Field(None, description="RS256 public key (PEM) for API tokens.")
    jwt_jwks_file: str | None = Field(None, description="RS256 JWKS file for API tokens.")
    jwt_leeway_seconds: int = Field(30, ge=0, le=300, description="Allowed clock skew for exp/nbf/iat.")
    api_host: str = Field("127.0.0.1", description="API bind address.")
    api_port: int = Field(8000, ge=0, le=65535, description="API port.")
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")

    @field_validator("data_dir")
    @classmethod
    def _abs(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def store_url(self) -> str:
        """The effective ClickHouse URL (embedded default under the data directory)."""
        return self.clickhouse_url or f"chdb://{(self.data_dir / 'chdb').as_posix()}"

    @property
    def embedded(self) -> bool:
        return self.store_url.startswith("chdb://")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
