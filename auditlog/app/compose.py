"""The composition root: how the commands that run the pipeline (``up``, ``api``, ``consume``, ``stream``; ``emit``
for its producer) build their parts from one :class:`~auditlogkit.server.settings.Settings`.

Contract of :class:`Composition` (one per process; nothing is started here):
- one catalog for every part: the packaged one plus the operator's file (``AUDITLOG_CATALOG_EXTRA``);
- :meth:`~Composition.migrate` migrates the store of :meth:`~Composition.store` with that catalog and
  ``AUDITLOG_RETENTION_DAYS``, so starting any command keeps the operator's labels in ``catalog_actions`` and
  ``audit_events_flat``;
- every producer is an ``AuditProducer`` on :class:`~auditlogkit.kafka.KafkaConnection` (bootstrap, TLS, SASL):
  ingest's batches for :data:`INGEST_LINGER_MS`, the self-audit's for its own short linger;
- :meth:`~Composition.api_app` is the API (``create_app``) and :meth:`~Composition.consumer_worker` a consumer
  worker, both with that catalog, and :meth:`~Composition.stream_deliverer` the log streams' deliverer. Each command
  then only wires and runs what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditlogkit.kafka import KafkaConnection
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.server.logs import get_logger
from auditlogkit.server.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from fastapi import FastAPI

    from auditlogkit import AuditProducer
    from auditlogkit.consumers.worker import ConsumerWorker
    from auditlogkit.query_api.streams.deliverer import Deliverer
    from auditlogkit.server.store import Store

_log = get_logger("auditlogkit.server.app.compose")
INGEST_LINGER_MS = 5  # events from services: batched for a moment (the SDK's default)


class Composition:
    """The parts of one process, built from ``settings`` (``bootstrap``: the broker to use instead of theirs)."""

    def __init__(self, settings: Settings, *, bootstrap: str | None = None) -> None:
        self.settings = settings
        self.catalog = get_catalog(settings.catalog_extra)
        self.kafka = KafkaConnection.from_settings(settings, bootstrap)

    # ----- store -------------------------------------------------------------------------------------------
    def store(self) -> Store:
        from auditlogkit.server.store import Store

        return Store.from_settings(self.settings)

    def migrate(self, store: Store) -> list[str]:
        """Apply what is pending with the operator's catalog and the retention; the names of what changed."""
        from auditlogkit.server.db.migrations import migrate

        return migrate(store, self.settings.retention_days, catalog=self.catalog)

    def open_store(self, command: str, event_prefix: str, *, detail: Callable[[BaseException], str],
                   hint_embedded: bool = False) -> Store | None:
        """The migrated store, or None after logging ``<event_prefix>.store_unavailable`` and saying on stderr why
        ``auditlog <command>`` cannot open it (``detail`` renders the failure, credentials redacted;
        ``hint_embedded``: also say that a chdb:// directory serves one process at a time)."""
        import sys

        from auditlogkit.server.store import redact_url

        store = self.store()
        try:
            self.migrate(store)
        except Exception as exc:
            msg = detail(exc)
            _log.error(f"{event_prefix}.store_unavailable", store=redact_url(store.url), error=msg)
            print(f"auditlog {command}: cannot open the store {redact_url(store.url)}: {msg}", file=sys.stderr)
            if hint_embedded and store.embedded:
                print("  (a chdb:// directory can be used by one process at a time: stop `auditlog consume`/`up`)",
                      file=sys.stderr)
            return None
        return store

    # ----- producers -----------------------------------------------------------------------------------------
    def producer_options(self, *, self_audit: bool = False, **overrides: Any) -> dict[str, Any]:
        """The ``AuditProducer`` arguments of the ingest producer, or of the self-audit's; ``overrides`` (e.g.
        ``request_timeout_ms``, ``topic``) win."""
        from auditlogkit.query_api.security.self_audit import PRODUCER_LINGER_MS as SELF_AUDIT_LINGER_MS

        return {"bootstrap_servers": self.kafka.bootstrap, "topic": self.settings.topic, "catalog": self.catalog,
                "linger_ms": SELF_AUDIT_LINGER_MS if self_audit else INGEST_LINGER_MS,
                **self.kafka.security_options(), **overrides}

    def ingest_producer(self, **overrides: Any) -> AuditProducer:
        """The producer of ingested events (``POST /v1/ingest``, the demo, ``emit``); not started."""
        from auditlogkit import AuditProducer

        return AuditProducer(**self.producer_options(**overrides))

    def self_audit_producer(self, **overrides: Any) -> AuditProducer:
        """The API's own producer of its ``audit_log.*`` events: reads wait for its acks; not started."""
        from auditlogkit import AuditProducer

        return AuditProducer(**self.producer_options(self_audit=True, **overrides))

    # ----- services ------------------------------------------------------------------------------------------
    def api_app(self, store: Store, *, producer: AuditProducer | None = None,
                audit_producer: AuditProducer | None = None, consumer_status: Callable[[], dict] | None = None,
                parts_status: Callable[[], dict[str, str]] | None = None,
                streams_key: bytes | None = None) -> FastAPI:
        """The API and page over ``store`` (producers absent: attached later, or 503; ``streams_key`` absent:
        ``AUDITLOG_STREAMS_KEY``, or the streams routes answer 503)."""
        from auditlogkit.query_api.core.app import create_app

        return create_app(self.settings, store, catalog=self.catalog, producer=producer,
                          audit_producer=audit_producer, consumer_status=consumer_status, parts_status=parts_status,
                          streams_key=streams_key)

    def consumer_worker(self, store: Store, settings: Settings | None = None, *,
                        on_stored: Callable[[int], None] | None = None) -> ConsumerWorker:
        """A consumer worker storing into ``store`` (``settings``: this process's, adjusted, e.g. by ``up``;
        ``on_stored(rows)``: told on its loop after each insert, e.g. ``up``'s log streams)."""
        from auditlogkit.consumers.worker import ConsumerWorker

        return ConsumerWorker(settings or self.settings, store, catalog=self.catalog, on_stored=on_stored)

    def stream_deliverer(self, store: Store, key: bytes) -> Deliverer:
        """The log streams' deliverer over ``store``, with the streams ``key`` (``auditlog stream``, ``up``)."""
        from auditlogkit.query_api.streams.deliverer import Deliverer

        return Deliverer.from_settings(store, self.settings, self.catalog, key)
