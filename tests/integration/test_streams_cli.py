"""``auditlog stream`` as an operator runs it (a subprocess): without a usable AUDITLOG_STREAMS_KEY it exits 2
with the reason before anything starts; with one it migrates its store, runs the deliverer, serves /metrics and
stops cleanly on SIGTERM (exit 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from auditlogkit.query_api.streams.keys import new_key_text
from auditlogkit.server.broker import free_port

pytestmark = pytest.mark.timeout(60)


def run(tmp_path: Path, key: str | None, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITLOG_")}
    env.update(AUDITLOG_DATA_DIR=str(tmp_path), AUDITLOG_CLICKHOUSE_URL=f"chdb://{tmp_path / 'chdb'}")
    if key is not None:
        env["AUDITLOG_STREAMS_KEY"] = key
    return subprocess.Popen([sys.executable, "-m", "auditlogkit.server.app.cli", "stream", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize(("key", "reason"), [(None, "it is not set"), ("c2hvcnQ=", "it is 5 bytes once decoded"),
                                             ("A" * 43 + "=", "its bytes are not random")])
def test_a_missing_or_weak_key_is_refused_before_anything_starts(tmp_path: Path, key: str | None,
                                                                   reason: str) -> None:
    proc = run(tmp_path, key)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"AUDITLOG_STREAMS_KEY is refused: {reason}" in err
    assert not (tmp_path / "chdb").exists()


def test_it_delivers_until_sigterm_and_serves_metrics(tmp_path: Path) -> None:
    port = free_port()
    proc = run(tmp_path, new_key_text(), "--metrics-port", str(port))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
        assert "# TYPE auditlog_stream_delivered_events_total counter" in metrics
        assert "# TYPE auditlog_stream_lag_seconds gauge" in metrics
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "deliverer.started" in err
    assert "deliverer.stopped" in err
