"""Server-path fixtures: real Apache Kafka and ClickHouse server images through testcontainers.

Without a Docker engine every test that asks for a container is skipped with the reason (testcontainers 4
raises docker.errors.DockerException in the container's constructor; we probe the engine once first).
Images are pinned to the versions of deploy/compose.yaml.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8"
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"  # testcontainers' KafkaContainer wiring (KRaft); a real Apache Kafka
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-pw-" + uuid.uuid4().hex[:8]


def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers, else why not (also when the docker SDK is missing)."""
    if os.environ.get("AUDITLOG_SKIP_DOCKER"):
        return "AUDITLOG_SKIP_DOCKER is set"
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:  # DockerException, connection refused, missing socket, ...
        return f"no Docker engine available for testcontainers ({type(exc).__name__}: {str(exc)[:120]})"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> None:
    reason = docker_unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def clickhouse_server(docker_engine: None) -> Iterator[dict[str, Any]]:
    """A ClickHouse server whose admin user may manage access (like deploy/compose.yaml)."""
    from testcontainers.community.clickhouse import ClickHouseContainer

    c = ClickHouseContainer(CLICKHOUSE_IMAGE, username=ADMIN_USER, password=ADMIN_PASSWORD, dbname="default")
    c.with_env("CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT", "1")
    with c:
        host, port = c.get_container_host_ip(), c.get_exposed_port(8123)
        yield {"host": host, "port": int(port), "admin_url": f"http://{ADMIN_USER}:{ADMIN_PASSWORD}@{host}:{port}"}


@pytest.fixture(scope="session")
def kafka_server(docker_engine: None) -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer

    with KafkaContainer(KAFKA_IMAGE).with_kraft() as k:
        yield k.get_bootstrap_server()


def user_url(server: dict[str, Any], user: str, password: str) -> str:
    return f"http://{user}:{password}@{server['host']}:{server['port']}"
