"""All settings in one place, read from ``AUDITLOG_*`` environment variables (and CLI flags that override them).

Contract: every field's description is what ``auditlog --help`` and docs/configuration.md show; add new settings here only.
:data:`IDENT_PATTERN` / :func:`check_ident` are the one rule for a ClickHouse identifier (database, cluster,
user and role names that reach SQL text), used by the settings, the store, migrations and roles.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from auditlogkit.server.signing import ServerKeys, server_secret_for, weak_secret
from auditlogkit.settings import KafkaSettings

#: a plain ClickHouse identifier: letters, digits and ``_``, not starting with a digit (safe in SQL text unquoted)
IDENT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_IDENT = re.compile(IDENT_PATTERN)


def check_ident(name: str, what: str = "identifier") -> str:
    """``name`` if it matches :data:`IDENT_PATTERN`, else ValueError naming ``what`` (``"database name"``)."""
    if not _IDENT.match(name):
        raise ValueError(f"invalid {what} {name!r}: letters, digits and '_' only, not starting with a digit")
    return name


class Settings(KafkaSettings):
    """The server's settings; the Kafka connection and topic are the SDK's (:class:`auditlogkit.settings.KafkaSettings`)."""

    model_config = SettingsConfigDict(env_prefix="AUDITLOG_", extra="ignore")

    data_dir: Path = Field(Path(".auditlog"), description="Directory for the embedded store (chDB) and state.")
    dlq_topic: str = Field("audit.events.dlq", description="Dead-letter topic for invalid messages.")
    topic_partitions: int = Field(6, ge=1, description="Partitions when auditlog creates the topics.")
    topic_replication: int = Field(1, ge=1, description="Replicas per partition when auditlog creates the topics (3 on a production cluster).")
    consumer_group: str = Field("auditlog-consumer", description="Kafka consumer group of the workers.")
    clickhouse_url: str | None = Field(
        None,
        description="ClickHouse: 'chdb:///abs/dir' (embedded, default <data_dir>/chdb) or "
        "'http(s)://user:password@host:port' for a server.",
    )
    clickhouse_user: str | None = Field(None, description="ClickHouse user (server); overrides the URL's user.")
    clickhouse_password: SecretStr | None = Field(
        None, description="ClickHouse password (server); overrides the URL's, needs no URL encoding.")
    clickhouse_database: str = Field("auditlog", pattern=IDENT_PATTERN, description="Database name.")
    retention_days: int = Field(400, ge=1, description="TTL of events in days (applied by migrate).")
    catalog_extra: str | None = Field(None, description="Path of an operator's extra catalog JSON file.")
    batch_max_rows: int = Field(50_000, ge=1, description="Consumer flushes a batch at this many rows ...")
    batch_max_seconds: float = Field(1.0, gt=0, description="... or when its oldest message is this old ...")
    batch_min_seconds: float = Field(
        0.2, ge=0, description="... or, once it has caught up with the broker, this long after the previous flush.")
    max_inflight_rows: int = Field(200_000, ge=1, description="Consumer pauses fetching above this many buffered rows.")
    session_timeout_ms: int = Field(10_000, ge=1000, description="Kafka consumer group session timeout.")
    consumer_metrics_host: str = Field("127.0.0.1", description="Bind address of `auditlog consume`'s /metrics and /readyz.")
    consumer_metrics_port: int = Field(9464, ge=0, le=65535, description="Port of `auditlog consume`'s /metrics and /readyz (0: none).")
    consumer_max_poll_records: int = Field(5_000, ge=1, description="Consumer: most records taken per fetch (getmany).")
    consumer_decode_processes: int = Field(
        -1, ge=-1, le=64, description="Consumer: helper processes that validate and encode events "
        "(0: in the worker's own process; -1: auto, one per CPU with a ClickHouse server, one per CPU beyond "
        "the second with embedded chDB, whose inserts need two, at least one beside the API in `auditlog up`; "
        "at most 4).")
    consumer_nice: int = Field(0, ge=0, le=19, description="Consumer: CPU niceness of its ingest work (decode "
                               "helpers, insert thread); `auditlog up` uses 10 so that the API beside it comes first.")
    consumer_dedup: bool = Field(True, description="Consumer: insert dedup tokens and offset watermarks (off only to measure their cost).")
    consumer_retry_max_seconds: float = Field(30.0, gt=0, description="Consumer: cap of the store/DLQ retry backoff.")
    consumer_shutdown_timeout_s: float = Field(30.0, gt=0, description="Consumer: most time to flush and commit on stop.")
    consumer_stall_seconds: float = Field(60.0, gt=0, description="Consumer readiness turns red after this long without a commit while lag grows.")
    dlq_limit_ratio: float = Field(0.5, gt=0, le=1, description="Consumer stops if more than this share of the last window is invalid (1 = never).")
    dlq_limit_window: int = Field(1_000, ge=1, description="Consumer: messages in the DLQ-rate window.")
    server_secret: SecretStr | None = Field(
        None, description="Server secret (32 bytes or more) that signs list cursors, live-tail positions and the "
        "API's own messages to the consumer (self-audit, HTTP ingest); the API and every consumer must share it. "
        "Default: one generated into the data directory (fine for `auditlog up`; required for `api`/`consume` "
        "with a ClickHouse server).")
    jwt_secret: str | None = Field(None, description="HS256 secret for API tokens (32 bytes or more; an example "
                                   "value of this repository is refused).")
    jwt_public_key_file: str | None = Field(None, description="RS256 public key (PEM) for API tokens.")
    jwt_jwks_file: str | None = Field(None, description="RS256 JWKS file for API tokens.")
    jwt_jwks_url: str | None = Field(
        None, description="RS256 JWKS URL of the identity provider for API tokens (https; http only to a loopback "
        "host): fetched at first use, cached, fetched again when a token names an unknown kid or the keys are "
        "older than AUDITLOG_JWT_JWKS_MAX_AGE_SECONDS; a failed fetch keeps the keys held.")
    jwt_jwks_refresh_seconds: float = Field(30.0, ge=1, description="Least time between two fetches of "
                                            "AUDITLOG_JWT_JWKS_URL (tokens with made-up kids cannot make it more).")
    jwt_jwks_max_age_seconds: float = Field(300.0, ge=1, description="Keys of AUDITLOG_JWT_JWKS_URL are fetched "
                                            "again when older than this (a key the provider removed stops verifying).")
    jwt_leeway_seconds: int = Field(30, ge=0, le=300, description="Allowed clock skew for exp/nbf/iat.")
    jwt_audience: str | None = Field(None, description="Required 'aud' claim of API tokens (set it in production).")
    jwt_issuer: str | None = Field(None, description="Required 'iss' claim of API tokens (set it in production).")
    api_host: str = Field("127.0.0.1", description="API bind address.")
    api_forwarded_allow_ips: str = Field(
        "", description="API: the proxies (ingress, load balancer) whose X-Forwarded-For / X-Forwarded-Proto are "
        "believed, IP addresses or CIDRs, comma-separated; the self-audit then records the client they name. "
        "Default: none (the connecting address is recorded, the headers ignored).")
    api_docs: bool = Field(True, description="Serve /docs and /openapi.json (self-hosted assets; off hides both).")
    api_rate_per_second: float = Field(20.0, ge=0, description="API: requests per second per caller (sub + org) on /v1, token bucket (0: no limit).")
    api_rate_burst: int = Field(100, ge=1, description="API: burst size of the per-caller rate limit.")
    api_exports_per_caller: int = Field(2, ge=1, description="API: exports one caller may run at once (more: 429).")
    api_exports_total: int = Field(8, ge=1, description="API: exports the process runs at once (more: 429).")
    api_export_stall_seconds: float = Field(30.0, gt=0, description="API: an export whose client reads nothing for this long is ended and its query cancelled.")
    api_query_threads: int = Field(16, ge=1, le=256, description="API: threads for store queries (exports have their own).")
    api_queries_per_caller: int = Field(4, ge=1, description="API: store queries (list, detail, stats, autocomplete, integrity) one caller (sub + org) may have running or waiting at once (more: 429 at once, so one caller never holds every query thread).")
    api_query_timeout_seconds: float = Field(30.0, gt=0, description="API: max_execution_time of every store query (exports: per page).")
    api_query_max_memory: int = Field(2 << 30, ge=1 << 20, description="API: max_memory_usage (bytes) of every store query.")
    api_audit_ack_timeout_seconds: float = Field(2.0, gt=0, description="API: most time to wait for the broker to acknowledge a read's audit event (then 503).")
    api_list_detail_max_bytes: int = Field(8192, ge=0, description="API: list rows leave out a detail larger than this (detail_omitted: true); /v1/events/{id} serves it whole.")
    api_page_window_rows: int = Field(5000, ge=0, le=100_000, description="API: the newest events of each organization whose pages are read, held in memory so that a list page within them is answered without a store query (0: off; a page beyond them, or with a non-ASCII keyword, asks the store).")
    api_page_window_mib: int = Field(128, ge=1, description="API: most memory (MiB, estimated) the page window holds; the organizations read least recently are dropped first.")
    api_integrity_cache_seconds: float = Field(60.0, ge=0, description="API: /v1/integrity answers from a run this recent (one run at a time per org).")
    integrity_recheck_seconds: float = Field(10.0, ge=0, description="verify and /v1/integrity: how long an event found deleted or unrecorded is looked at again before it counts (an insert in progress shows its row and its digest at different moments).")
    api_ingest_max_events: int = Field(10_000, ge=1, description="API: most events in one POST /v1/ingest (more: 413).")
    api_ingest_max_bytes: int = Field(5 << 20, ge=1024, description="API: largest POST /v1/ingest body in bytes (more: 413).")
    api_ingest_ack_timeout_seconds: float = Field(10.0, gt=0, description="API: most time POST /v1/ingest waits for the broker to acknowledge its events (then 503).")
    api_ingest_rate_per_second: float = Field(50.0, ge=0, description="API: POST /v1/ingest requests per second per service token (sub), token bucket (0: no limit).")
    api_ingest_rate_burst: int = Field(200, ge=1, description="API: burst size of the ingest rate limit.")
    api_ingest_per_caller: int = Field(4, ge=1, description="API: POST /v1/ingest requests one service token has in progress at once (more: 429 at once).")
    api_ingest_total: int = Field(8, ge=1, description="API: POST /v1/ingest requests the process has in progress at once (more: 429 at once); bounds the memory held by bodies.")
    api_tail_poll_seconds: float = Field(1.0, ge=0.05, description="API: how often the one shared live-tail reader asks the store for newly stored events (one query per poll for all streams of the process).")
    api_tail_heartbeat_seconds: float = Field(15.0, gt=0, le=15, description="API: a live tail sends a heartbeat comment at least this often.")
    api_tail_per_caller: int = Field(10, ge=1, description="API: live tails one caller may hold open at once (more: 429).")
    api_tail_total: int = Field(500, ge=1, description="API: live tails the process serves at once (more: 429).")
    api_tail_backlog_events: int = Field(10_000, ge=100, description="API: events a live tail may have waiting for its client; beyond, the stream ends and the client resumes with Last-Event-ID.")
    api_tail_audit_seconds: float = Field(60.0, gt=0, le=60, description="API: a live tail records the events it delivered (audit_log.tail, phase progress) at least this often while it runs; a record that cannot be published ends the stream.")
    api_port: int = Field(8000, ge=0, le=65535, description="API port.")
    streams_key: SecretStr | None = Field(
        None, description="Log streams: the key (32 random bytes, base64) that encrypts the destinations' secrets in "
        "the store, never kept there; the API and every deliverer share it. Default: one generated into the data "
        "directory (`auditlog up`); required by `auditlog stream`.")
    streams_clickhouse_user: str | None = Field(
        None, description="Log streams: the ClickHouse user (server) the API reads and writes stream configuration as, "
        "holding the role auditlog_streams (the API's own user is read-only). Unset: the API's own user (chDB, or an "
        "admin).")
    streams_clickhouse_password: SecretStr | None = Field(
        None, description="Log streams: the password of AUDITLOG_STREAMS_CLICKHOUSE_USER.")
    streams_allow_hosts: str = Field(
        "", description="Log streams: host names, addresses or CIDRs (comma-separated) a destination may use although "
        "it is http:// or resolves to a loopback, private or link-local address (e.g. 127.0.0.1 for development). "
        "Default: none (https to public addresses only).")
    streams_batch_max_events: int = Field(1_000, ge=1, le=10_000, description="Log streams: most events in one batch.")
    streams_batch_seconds: float = Field(1.0, gt=0, description="Log streams: how often a caught-up stream looks for new events (its batches' most age).")
    streams_lease_seconds: float = Field(15.0, ge=1, description="Log streams: lease of a deliverer on a stream (renewed every fifth of it); a stream whose deliverer died moves to another after this long.")
    streams_backoff_max_seconds: float = Field(300.0, gt=0, description="Log streams: longest wait before a failed batch is sent again (a refusal such as a 4xx always waits this long).")
    streams_request_timeout_seconds: float = Field(10.0, gt=0, description="Log streams: most time one send to a destination may take.")
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log format: json (one object per line), console (readable), or auto (console on a "
        "terminal, else json).")

    @field_validator("data_dir")
    @classmethod
    def _abs(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("server_secret", "jwt_secret")
    @classmethod
    def _strong_secret(cls, v: SecretStr | str | None, info: ValidationInfo) -> SecretStr | str | None:
        text = v.get_secret_value() if isinstance(v, SecretStr) else v
        why = weak_secret(text) if text else None  # empty jwt_secret: unset (`auditlog up` generates one)
        if why:
            raise ValueError(f"AUDITLOG_{str(info.field_name).upper()} is refused: {why} (generate one: "
                             "python -c 'import secrets; print(secrets.token_urlsafe(48))')")
        return v

    @field_validator("jwt_jwks_url")
    @classmethod
    def _jwks_url(cls, v: str | None) -> str | None:
        if not v:
            return None
        try:
            parts = urlsplit(v)
            scheme, host = parts.scheme, parts.hostname or ""
        except ValueError:
            scheme = host = ""
        if not host or not (scheme == "https" or (scheme == "http" and is_loopback(host))):
            raise ValueError("AUDITLOG_JWT_JWKS_URL must be an https:// URL with a host (http:// only to a loopback "
                             "host): the keys decide who may read")
        return v

    @field_validator("api_forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, v: str) -> str:
        items = [item.strip() for item in v.split(",") if item.strip()]
        for item in items:
            try:
                ipaddress.ip_network(item)  # strict: a CIDR with host bits set is a mistake
            except ValueError:
                raise ValueError(f"AUDITLOG_API_FORWARDED_ALLOW_IPS: {item!r} is not an IP address or CIDR of a proxy "
                                 "(e.g. 10.0.0.7 or 10.244.0.0/16; '*' is not accepted)") from None
        return ",".join(items)

    @property
    def forwarded_allow_ips(self) -> list[str]:
        """The proxies of ``api_forwarded_allow_ips`` (addresses and CIDRs; empty: none)."""
        return [item for item in self.api_forwarded_allow_ips.split(",") if item]

    def server_keys(self) -> ServerKeys:
        """The MAC keys of this deployment's server secret (:mod:`auditlogkit.server.signing`)."""
        configured = self.server_secret.get_secret_value() if self.server_secret else None
        return ServerKeys(server_secret_for(configured, self.data_dir))

    def with_overrides(self, *, data: str | Path | None = None, **updates: Any) -> Settings:
        """A validated copy with ``updates`` (CLI flags win over the environment); ``data`` is a ``--data``
        directory (resolved like ``AUDITLOG_DATA_DIR``). ``self`` when there is nothing to change."""
        if data:
            updates["data_dir"] = data
        return type(self).model_validate({**self.model_dump(), **updates}) if updates else self

    def decode_processes(self) -> int:
        """``consumer_decode_processes`` with -1 resolved for this machine and store (see the field's description)."""
        if self.consumer_decode_processes >= 0:
            return self.consumer_decode_processes
        cpus = usable_cpus()
        return max(0, min(4, cpus - 2 if self.embedded else cpus))

    @property
    def store_url(self) -> str:
        """The effective ClickHouse URL (embedded default under the data directory)."""
        return self.clickhouse_url or f"chdb://{(self.data_dir / 'chdb').as_posix()}"

    @property
    def embedded(self) -> bool:
        return self.store_url.startswith("chdb://")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (``localhost`` or a loopback address, IPv6 in brackets or not)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's CPU limit;
    ``os.cpu_count()`` would report the whole node's)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)

