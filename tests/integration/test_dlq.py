"""Dead-letter topic: the DLQ-rate guard, ``auditlog dlq list`` and ``auditlog dlq replay`` after a catalog fix."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from auditlogkit.consumers.kafka.dlq import DlqLimitExceeded
from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.server.app.cli import main
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.consumer_helpers import (
    BackgroundWorker,
    committed_offsets,
    consumer_env,
    count_events,
    publish,
    read_topic,
)
from tests.factories import make_event, random_events

pytestmark = pytest.mark.timeout(120)


async def test_dlq_rate_guard_stops_the_worker(settings: Settings, store: Store) -> None:
    settings = settings.model_copy(update={"dlq_limit_window": 200, "dlq_limit_ratio": 0.5,
                                           "batch_max_seconds": 5.0})
    await publish(settings.kafka_bootstrap, settings.topic, [b"garbage %d" % i for i in range(600)])
    worker = ConsumerWorker(settings, store)
    with pytest.raises(DlqLimitExceeded, match="of the last 200 messages were invalid"):
        await asyncio.wait_for(worker.run(), 60)
    st = worker.status()
    assert not st["ready"] and "AUDITLOG_DLQ_LIMIT_RATIO" in st["error"]
    # the window that tripped it was not dead-lettered nor committed: a restart meets the same wall
    com = await committed_offsets(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
    assert sum(max(o, 0) for o in com.values()) < 600
    dlq = await read_topic(settings.kafka_bootstrap, settings.dlq_topic)
    assert len(dlq) + sum(max(o, 0) for o in com.values()) <= 600


def test_consume_exits_3_on_dlq_limit(settings: Settings, tmp_path: Path) -> None:
    asyncio.run(publish(settings.kafka_bootstrap, settings.topic, [b"x"] * 300))
    env = consumer_env(settings, tmp_path / "c", dlq_limit_window=100)
    proc = subprocess.run([sys.executable, "-m", "auditlogkit.server.app.cli", "consume"], env=env, capture_output=True,
                          text=True, timeout=90)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "auditlog consume: stopped: 100 of the last 100 messages were invalid" in proc.stderr


async def test_dlq_list_and_replay_after_catalog_fix(settings: Settings, store: Store, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    new_action = [make_event(action="vm.hibernate", category="vm", scope="service") for _ in range(25)]
    bad_ip = [make_event(actor={"ip": "300.1.1.1"}) for _ in range(5)]
    valid = random_events(50, seed=4)
    values = [json.dumps(e).encode() for e in [*valid, *new_action, *bad_ip]]
    await publish(settings.kafka_bootstrap, settings.topic, values,
                  keys=[b"k%d" % i for i in range(len(values))])
    async with BackgroundWorker(ConsumerWorker(settings, store)) as bw:
        await bw.until(lambda s: s["stored"] == 50 and s["dead_lettered"] == 30, 60)

    flags = ["--bootstrap", settings.kafka_bootstrap, "--topic", settings.topic, "--dlq-topic", settings.dlq_topic]
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["dlq", "list", "--json", *flags]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["total"] == 30
    reasons = {(r["field"], r["count"]) for r in listing["reasons"]}
    assert ("action", 25) in reasons and ("actor.ip", 5) in reasons

    # the operator adds the missing action to the catalog, then replays what now validates
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"scopes": [{"code": "service", "label": "Service", "categories": [
        {"code": "vm", "label": "VM", "actions": [{"code": "vm.hibernate", "label": "Hibernate VM"}]}]}]}))
    monkeypatch.setenv("AUDITLOG_CATALOG_EXTRA", str(extra))
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["dlq", "replay", *flags]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["replayed"] == 25 and out["still_invalid_skipped"] == 5

    catalog = Catalog.load(str(extra))
    async with BackgroundWorker(ConsumerWorker(settings, store, catalog=catalog)) as bw:
        await bw.until(lambda s: s["stored"] == 25, 60)
    assert count_events(store) == 75
    assert count_events(store, where="WHERE action = 'vm.hibernate'") == 25
    replayed = [r for r in await read_topic(settings.kafka_bootstrap, settings.topic) if r.offset >= 0]
    tail = [r for r in replayed if any(k == "auditlog.replay.of" for k, _ in r.headers)]
    assert len(tail) == 25 and all(not k.startswith("dlq.") for r in tail for k, _ in r.headers)
    assert {r.key for r in tail} == {b"k%d" % i for i in range(50, 75)}  # original keys kept
