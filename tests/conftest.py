"""Shared fixtures: a real Tansu broker (session), a real chDB engine (one per test process: chDB allows one
engine path per process), a fresh database and fresh topics per test, and settings that point at them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditlogkit.server.broker import EmbeddedBroker, ensure_topics
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_file=log) as b:
        yield b


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def store(chdb_url: str) -> Iterator[Store]:
    """A migrated, empty database of its own on the process's chDB engine."""
    s = Store(chdb_url, f"t_{uuid.uuid4().hex[:12]}")
    migrate(s)
    yield s
    s.client().command(f"DROP DATABASE IF EXISTS {s.database} SYNC")


@pytest.fixture
def topics(broker: EmbeddedBroker) -> tuple[str, str]:
    """Fresh (topic, dlq_topic) with 6 partitions each."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"audit.events.{suffix}", f"audit.events.{suffix}.dlq")
    asyncio.run(ensure_topics(broker.bootstrap, list(names), 6))
    return names


@pytest.fixture
def settings(tmp_path: Path, broker: EmbeddedBroker, topics: tuple[str, str], store: Store) -> Settings:
    return Settings(
        data_dir=tmp_path,
        kafka_bootstrap=broker.bootstrap,
        topic=topics[0],
        dlq_topic=topics[1],
        consumer_group=f"g-{uuid.uuid4().hex[:8]}",
        clickhouse_url=store.url,
        clickhouse_database=store.database,
        session_timeout_ms=3000,
        batch_max_seconds=0.2,
        jwt_secret="test-secret-0123456789abcdef0123456789",
    )
