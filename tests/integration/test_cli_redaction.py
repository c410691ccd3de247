"""A ClickHouse URL with a password never reaches the terminal or the logs: ``auditlog api``, ``consume``,
``migrate`` and ``up`` against an unreachable server print the URL as ``http://***@host:port`` and exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from auditlogkit.server.broker import free_port

pytestmark = pytest.mark.timeout(120)
PASSWORD = "s3cret-Pw0rd"


def _run(args: list[str], url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITLOG_")}
    env.update({"AUDITLOG_CLICKHOUSE_URL": url, "AUDITLOG_JWT_SECRET": "s" * 32, **extra})
    return subprocess.run([sys.executable, "-m", "auditlogkit.server.app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=90)


@pytest.mark.parametrize("command", [["api"], ["consume"], ["migrate"]])
def test_store_url_password_is_not_printed(command: list[str]) -> None:
    port = free_port()  # nothing listens there
    url = f"http://alice:{PASSWORD}@127.0.0.1:{port}/"
    out = _run([*command, *(["--port", str(free_port())] if command == ["api"] else [])], url,
               AUDITLOG_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    both = out.stdout + out.stderr
    assert out.returncode == 1, both
    assert f"http://***@127.0.0.1:{port}/" in both, both
    assert PASSWORD not in both and "alice" not in both, both


def test_up_prints_no_store_password(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://alice:{PASSWORD}@127.0.0.1:{port}/"
    out = _run(["up", "--port", str(free_port()), "--kafka-port", str(free_port()), "--data", str(tmp_path / "d")],
               url)
    both = out.stdout + out.stderr
    assert out.returncode == 1 and "auditlog: cannot start" in both, both
    log = (tmp_path / "d" / "auditlog.log").read_text()
    assert PASSWORD not in both + log and "alice" not in both + log, both + log
