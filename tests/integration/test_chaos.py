"""Chaos (issue 5 acceptance 1): 300k messages (1 % producer retries of the same event_id, some invalid, some
invalid ones published twice) while the consumer process is SIGKILLed at random points >= 10 times and
restarted. Afterwards every valid event_id is in the store exactly once (SQL ``FINAL``, as analysts count) and
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

import pytest

from auditlog.settings import Settings
from consumers.testing import committed_offsets, consumer_env, highwaters, publish, read_topic, sql_in_subprocess
from tests.factories import make_event, random_events

N_TOTAL = 300_000
N_INVALID = 1_000


def _workload(seed: int) -> tuple[list[bytes], list[bytes], set[str], list[bytes]]:
    rng = random.Random(seed)
    n_retry = N_TOTAL // 100
    n_unique = N_TOTAL - n_retry - N_INVALID - N_INVALID // 10
    events = random_events(n_unique, seed=seed)
    valid = [json.dumps(e).encode() for e in events]
    invalid = [json.dumps(make_event(actor={"email": f"broken-{i}"})).encode() for i in range(N_INVALID)]
    invalid_published = invalid + rng.sample(invalid, N_INVALID // 10)  # some poison pills sent twice
    values = valid + invalid_published
    values += [valid[rng.randrange(len(valid))] for _ in range(n_retry)]  # producer retries, same event_id
    rng.shuffle(values)
    assert len(values) == N_TOTAL
    return values, valid, {e["event_id"] for e in events}, invalid_published


async def _committed_all(settings: Settings) -> bool:
    hw = await highwaters(settings.kafka_bootstrap, settings.topic)
    com = await committed_offsets(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
    return sum(hw.values()) == N_TOTAL and all(max(com.get(p, -1), 0) >= o for p, o in hw.items())


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_chaos_sigkill_restarts(settings: Settings, tmp_path: Path) -> None:
    values, _valid, valid_ids, invalid_published = _workload(seed=2026)
    settings = settings.model_copy(update={"batch_max_seconds": 0.5})
    env = consumer_env(settings, tmp_path / "c", batch_max_rows=20_000, max_inflight_rows=100_000)
    cmd = [sys.executable, "-m", "auditlog.cli", "consume"]
    rng = random.Random(7)
    producer = asyncio.create_task(publish(settings.kafka_bootstrap, settings.topic, values))
    kills = 0
    t0 = time.monotonic()
    logs = tmp_path / "logs"
    logs.mkdir()
    while kills < 10 or not producer.done():
        path = logs / f"run{kills}.log"
        with open(path, "w") as log:
            proc = subprocess.Popen(cmd, env=env, stderr=log)
            # kill at a random point after this run has started storing (else most kills hit the start-up)
            marker = '"batch.flushed"' if rng.random() < 0.8 else '"phase": "assigned"'
            while marker not in path.read_text() and proc.poll() is None and time.monotonic() - t0 < 110:
                await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0.0, 2.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        kills += 1
        assert time.monotonic() - t0 < 120, f"too slow: {kills} kills"
    await producer

    with open(logs / "final.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stderr=log)
        try:
            deadline = time.monotonic() + 150 - (time.monotonic() - t0)
            while not await _committed_all(settings):
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
