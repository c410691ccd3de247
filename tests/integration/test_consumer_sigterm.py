"""SIGTERM during load: ``auditlog consume`` exits 0 after flushing and committing, so no
stored row is left uncommitted and the restart stores nothing twice."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auditlogkit.server.broker import free_port
from auditlogkit.server.settings import Settings
from tests.consumer_helpers import (
    committed_offsets,
    consumer_env,
    highwaters,
    log_events,
    publish,
    sql_in_subprocess,
)
from tests.factories import random_events

pytestmark = pytest.mark.timeout(150)


async def _until_committed(settings: Settings, pred, timeout: float = 60) -> dict[int, int]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        com = await committed_offsets(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
        if pred(com):
            return com
        if time.monotonic() > deadline:
            raise TimeoutError(str(com))
        await asyncio.sleep(0.2)


async def _until_listening(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return


async def test_sigterm_flushes_commits_and_exits_0(settings: Settings, tmp_path: Path) -> None:
    events = random_events(30_000, seed=8)
    values = [json.dumps(e).encode() for e in events]
    env = consumer_env(settings, tmp_path / "c", batch_max_rows=2000, consumer_shutdown_timeout_s=20)
    cmd = [sys.executable, "-m", "auditlogkit.server.app.cli", "consume"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        producer = asyncio.create_task(publish(settings.kafka_bootstrap, settings.topic, values))
        await _until_committed(settings, lambda c: sum(max(o, 0) for o in c.values()) > 3000)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # mid-load: the producer is still publishing
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
        stop_s = time.monotonic() - t0
        await producer
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert stop_s < 25
    first = log_events(err, "consumer.stopped")[-1]
    assert first["stored"] > 0
    # every stored row's offset is committed: the stored watermark is below the committed offset everywhere
    com = await committed_offsets(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
    wm = sql_in_subprocess(tmp_path / "c", {"wm": "SELECT kafka_partition, max(max_offset) FROM "
                                                  "audit_events_offsets GROUP BY kafka_partition"})["wm"]
    for p, o in wm:
        assert int(o) < com[int(p)], (p, o, com)

    # restart: it must find nothing to skip and store exactly the rest
    port = free_port()
    proc = subprocess.Popen(cmd, env={**env, "AUDITLOG_CONSUMER_METRICS_PORT": str(port)}, stderr=subprocess.PIPE,
                            text=True)
    try:
        hw = await highwaters(settings.kafka_bootstrap, settings.topic)
        await _until_committed(settings, lambda c: all(max(c.get(p, -1), 0) >= o for p, o in hw.items()))
        # if the first run had committed everything, the condition holds at once: a SIGTERM while the child is
        # still importing (before its handlers exist) would kill it (-15); its /metrics port listening = running
        await _until_listening(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err2 = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 0, err2[-3000:]
    second = log_events(err2, "consumer.stopped")[-1]
    assert second["skipped_stored"] == 0 and second["skipped_dlq"] == 0
    assert first["stored"] + second["stored"] == len(events)
    res = sql_in_subprocess(tmp_path / "c", {"n": "SELECT count(), uniqExact(event_id) FROM audit_events"})
    assert res["n"][0] == [str(len(events)), str(len(events))]


async def test_consume_two_workers_serves_metrics_and_readyz(settings: Settings, tmp_path: Path) -> None:
    import urllib.request

    port = free_port()
    env = consumer_env(settings, tmp_path / "c", consumer_metrics_port=port)
    proc = subprocess.Popen([sys.executable, "-m", "auditlogkit.server.app.cli", "consume", "--workers", "2"], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        await publish(settings.kafka_bootstrap, settings.topic,
                      [json.dumps(e).encode() for e in random_events(3000, seed=9)])
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    body = json.loads(r.read())
                if sum(w["stored"] for w in body["workers"]) == 3000 and all(w["assigned"] for w in body["workers"]):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "not ready"
            await asyncio.sleep(0.2)
        assert len(body["workers"]) == 2 and body["ready"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            metrics = r.read().decode()
        assert "auditlog_consumer_events_stored_total{" in metrics, metrics[-3000:]
        assert "auditlog_consumer_lag{" in metrics, metrics[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert len(log_events(err, "consumer.stopped")) == 2
