"""A weak or example secret stops every command that would use it at start: one line on stderr naming the
setting, exit code 2, no traceback, nothing started (run as real processes, with the values the repository's
example files ship)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from auditlogkit.server.broker import free_port

ENV_EXAMPLE_JWT = "change-me-to-32-or-more-random-bytes"  # deploy/.env.example
K8S_EXAMPLE_JWT = "change-me-0123456789abcdef0123456789abcdef"  # deploy/k8s/secret.example.yaml


def run(argv: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUDITLOG_")}
    base.update({"AUDITLOG_DATA_DIR": str(tmp_path / "data"), "AUDITLOG_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
                 "AUDITLOG_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}", **env})
    return subprocess.run([sys.executable, "-m", "auditlogkit.server.app.cli", *argv], env=base, capture_output=True,
                          text=True, timeout=60)


COMMANDS = {
    "token": ["token", "--org", "acme"],
    "api": ["api", "--port", "0"],
    "up": ["up", "--port", "0", "--kafka-port", "0"],
    "consume": ["consume", "--metrics-port", "0"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("setting, value", [("AUDITLOG_JWT_SECRET", "too-short"),
                                            ("AUDITLOG_JWT_SECRET", ENV_EXAMPLE_JWT),
                                            ("AUDITLOG_JWT_SECRET", K8S_EXAMPLE_JWT),
                                            ("AUDITLOG_SERVER_SECRET", "replace-with-32-or-more-random-bytes")],
                         ids=["short", "env-example", "k8s-example", "server-secret-example"])
def test_a_weak_secret_stops_the_command_at_start(command: str, setting: str, value: str, tmp_path: Path) -> None:
    r = run(COMMANDS[command], tmp_path, **{setting: value})
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and setting in lines[0] and "refused" in lines[0], r.stderr
    assert value not in r.stderr, "the refused secret is not echoed"
    assert not r.stdout.strip(), "nothing started, no token printed"
    assert not (tmp_path / "data").exists() and not (tmp_path / "chdb").exists(), "nothing was created"
