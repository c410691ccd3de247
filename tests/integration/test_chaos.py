"""Chaos: 100k messages (1 % producer retries of the same event_id, some invalid, some
invalid ones published twice) while the consumer process is SIGKILLed at random points >= 5 times and
restarted; the soak size (``-m soak``, run by ``bench/soak.py``) is 300k messages and >= 10 kills. Afterwards every valid event_id is in the store exactly once (SQL ``FINAL``, as analysts count) and
every invalid message is on the DLQ exactly as often as it was published.

The consumer runs as ``auditlog consume`` subprocesses on their own chDB directory; the check runs in one more
subprocess after the last consumer stopped (one chDB engine path per process)."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from auditlogkit.server.settings import Settings
from tests.consumer_helpers import committed_offsets, consumer_env, highwaters, publish, read_topic, sql_in_subprocess
from tests.factories import make_event, random_events

N_INVALID = 1_000


def _workload(seed: int, n_total: int) -> tuple[list[bytes], list[dict], set[str], list[bytes]]:
    rng = random.Random(seed)
    n_retry = n_total // 100
    n_unique = n_total - n_retry - N_INVALID - N_INVALID // 10
    events = random_events(n_unique, seed=seed)
    valid = [json.dumps(e).encode() for e in events]
    invalid = [json.dumps(make_event(actor={"email": f"broken-{i}"})).encode() for i in range(N_INVALID)]
    invalid_published = invalid + rng.sample(invalid, N_INVALID // 10)  # some poison pills sent twice
    values = valid + invalid_published
    retried = [rng.randrange(len(valid)) for _ in range(n_retry)]
    values += [valid[i] for i in retried]  # producer retries: the same event_id published again
    rng.shuffle(values)
    assert len(values) == n_total
    return values, [events[i] for i in retried], {e["event_id"] for e in events}, invalid_published


API_CHECK = """
import json, sys
from datetime import UTC, datetime, timedelta
from fastapi.testclient import TestClient
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from auditlogkit.query_api.core.app import create_app
from auditlogkit.query_api.security.auth import mint_token

s = Settings()
events = json.loads(sys.stdin.read())
start = (datetime.now(UTC) - timedelta(days=9)).isoformat()
once = 0
with TestClient(create_app(s, Store.from_settings(s))) as client:
    for ev in events:
        tok = mint_token(s.jwt_secret, sub="u", email="o@x.example", org_id=ev["org_id"], role="org_owner")
        h = {"Authorization": f"Bearer {tok}"}
        page = client.get("/v1/events", params={"target": ev["target"]["id"], "start": start}, headers=h)
        one = client.get(f"/v1/events/{ev['event_id']}", headers=h)
        ids = [e["event_id"] for e in page.json()["data"]]
        once += page.status_code == 200 and ids == [ev["event_id"]] and one.status_code == 200
print(json.dumps({"checked": len(events), "once": once}))
"""


def _api_check(settings: Settings, data_dir: Path, events: list[dict]) -> dict:
    """Ask the read API (on the consumer's chDB directory, in a fresh process) for producer-retried events:
    each must come back exactly once, by filter and by id."""
    env = consumer_env(settings, data_dir, jwt_secret=settings.jwt_secret)
    out = subprocess.run([sys.executable, "-c", API_CHECK], input=json.dumps(events), env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


async def _committed_all(settings: Settings, n_total: int) -> bool:
    hw = await highwaters(settings.kafka_bootstrap, settings.topic)
    com = await committed_offsets(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
    return sum(hw.values()) == n_total and all(max(com.get(p, -1), 0) >= o for p, o in hw.items())


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize(("n_total", "min_kills"), [
    pytest.param(100_000, 5, id="100k"),
    pytest.param(300_000, 10, id="300k", marks=pytest.mark.soak),
])
async def test_chaos_sigkill_restarts(settings: Settings, tmp_path: Path, n_total: int, min_kills: int) -> None:
    values, retried, valid_ids, invalid_published = _workload(seed=2026, n_total=n_total)
    settings = settings.model_copy(update={"batch_max_seconds": 0.5, "session_timeout_ms": 2000})
    # one decode helper per consumer: the kills also hit decodes in flight, and the helpers must die too
    env = consumer_env(settings, tmp_path / "c", batch_max_rows=20_000, max_inflight_rows=100_000,
                       consumer_decode_processes=1)
    cmd = [sys.executable, "-m", "auditlogkit.server.app.cli", "consume"]
    rng = random.Random(7)
    producer = asyncio.create_task(publish(settings.kafka_bootstrap, settings.topic, values))
    kills = 0
    t0 = time.monotonic()
    logs = tmp_path / "logs"
    logs.mkdir()
    while kills < min_kills or not producer.done():
        path = logs / f"run{kills}.log"
        with open(path, "w") as log:
            proc = subprocess.Popen(cmd, env=env, stderr=log)
            # kill at a random point after this run has started storing (else most kills hit the start-up)
            marker = '"batch.flushed"' if rng.random() < 0.8 else '"phase": "assigned"'
            while marker not in path.read_text() and proc.poll() is None and time.monotonic() - t0 < 130:
                await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0.0, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        kills += 1
        assert time.monotonic() - t0 < 140, f"too slow: {kills} kills"
    await producer

    with open(logs / "final.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stderr=log)
        try:
            while '"consumer.started"' not in (logs / "final.log").read_text():
                assert proc.poll() is None, (logs / "final.log").read_text()[-3000:]
                await asyncio.sleep(0.05)
            deadline = t0 + 160
            while not await _committed_all(settings, n_total):
                assert proc.poll() is None, (logs / "final.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "final consumer did not catch up"
                await asyncio.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0

    res = sql_in_subprocess(tmp_path / "c", {
        "final": "SELECT count(), uniqExact(event_id) FROM audit_events FINAL",
        "ids": "SELECT event_id FROM audit_events FINAL",
    })
    assert res["final"][0] == [str(len(valid_ids)), str(len(valid_ids))]
    assert {r[0] for r in res["ids"]} == valid_ids
    api = _api_check(settings, tmp_path / "c", retried[:60])
    assert api == {"checked": 60, "once": 60}, api
    dlq = await read_topic(settings.kafka_bootstrap, settings.dlq_topic, timeout_s=60)
    assert Counter(r.value for r in dlq) == Counter(invalid_published)
    flushed_by_killed = sum(
        json.loads(line)["rows"]
        for f in logs.glob("run*.log") for line in f.read_text().splitlines() if '"batch.flushed"' in line
    )
    skipped = sum(
        json.loads(line)["stored"] + json.loads(line)["dead_lettered"]
        for f in logs.iterdir() for line in f.read_text().splitlines() if '"messages.skipped_redelivered"' in line
    )
    print(f"chaos: {kills} SIGKILLs in {time.monotonic() - t0:.0f}s; rows stored by killed runs: "
          f"{flushed_by_killed}; redelivered messages skipped by watermarks: {skipped}")
    assert flushed_by_killed > 0 and skipped > 0  # the kills did hit a consumer that was storing
    assert _orphan_helpers(str(tmp_path)) == [], "decode helpers outlived their SIGKILLed consumer"


def _orphan_helpers(mark: str) -> list[int]:
    """Decode helper processes of this test's consumers (their environment names ``mark``, the test's directory:
    other tests may run beside this one) whose consumer is gone (re-parented away from their starter)."""
    me = psutil.Process()
    ours = {p.pid for p in me.children(recursive=True)}
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "auditlogkit.consumers.decode.helper" in cmd and p.info["pid"] not in ours:
            try:
                if any(mark in v for v in p.environ().values()):
                    out.append(p.info["pid"])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    return out
