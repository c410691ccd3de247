"""The producer SDK and `auditlog emit` against the real broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from auditlogkit import AuditProducer, AuditProducerSync, InvalidEvent
from auditlogkit.schemas import parse_event
from auditlogkit.server.broker import EmbeddedBroker
from tests.factories import make_event

AUDITLOG = str(Path(sys.executable).with_name("auditlog"))


async def read_all(bootstrap: str, topic: str, n: int, timeout: float = 10) -> list:
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    out: list = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < n and loop.time() < deadline:
            for recs in (await c.getmany(timeout_ms=300)).values():
                out.extend(recs)
    finally:
        await c.stop()
    return out


async def test_async_producer_validates_keys_by_org_and_sends_wire_form(broker: EmbeddedBroker, topics) -> None:
    topic = topics[0]
    async with AuditProducer(broker.bootstrap, topic) as p:
        with pytest.raises(InvalidEvent) as exc:
            await p.send(make_event(action="vm.nuke"))
        assert exc.value.field == "action"
        evs = [make_event(org_id=org) for org in ("acme", "globex", "acme", "initech")]
        assert await p.send_many(evs) == 4
    recs = await read_all(broker.bootstrap, topic, 4)
    assert len(recs) == 4  # the invalid one never left the service
    by_id = {json.loads(r.value)["event_id"]: r for r in recs}
    for ev in evs:
        r = by_id[ev["event_id"]]
        assert r.key == ev["org_id"].encode()
        assert parse_event(r.value).org_id == ev["org_id"]
    acme = {r.partition for r in recs if r.key == b"acme"}
    assert len(acme) == 1, "one tenant's events share a partition (ordered)"


async def test_send_many_sends_nothing_if_one_event_is_invalid(broker: EmbeddedBroker, topics) -> None:
    async with AuditProducer(broker.bootstrap, topics[0]) as p:
        with pytest.raises(InvalidEvent):
            await p.send_many([make_event(), make_event(actor={"email": "nope"})])
    assert await read_all(broker.bootstrap, topics[0], 1, timeout=1.5) == []


def test_sync_producer_fills_id_and_time(broker: EmbeddedBroker, topics) -> None:
    ev = make_event()
    del ev["event_id"], ev["occurred_at"]
    with AuditProducerSync(broker.bootstrap, topics[0]) as p:
        md = p.send_and_wait(ev)
        assert md.topic == topics[0]
        with pytest.raises(InvalidEvent):
            p.send(make_event(status="MAYBE"))
    recs = asyncio.run(read_all(broker.bootstrap, topics[0], 1))
    parsed = parse_event(recs[0].value)
    assert parsed.event_id and parsed.occurred_at.tzinfo is not None


def test_emit_cli_ndjson_and_flags(broker: EmbeddedBroker, topics, tmp_path: Path) -> None:
    env_args = ["--bootstrap", broker.bootstrap, "--topic", topics[0]]
    good = [make_event(), make_event(org_id="globex")]
    f = tmp_path / "events.ndjson"
    f.write_text("\n".join(json.dumps(e) for e in good) + "\n" + json.dumps(make_event(actor={"ip": "1.2.3"})) + "\n")
    r = subprocess.run([AUDITLOG, "emit", str(f), *env_args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "line 3: invalid actor.ip" in r.stderr and "nothing sent" in r.stderr
    r = subprocess.run([AUDITLOG, "emit", str(f), "--skip-invalid", *env_args], capture_output=True, text=True, timeout=60)
    assert "2 event(s) published" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([AUDITLOG, "emit", *env_args, "--org", "acme", "--scope", "service", "--action", "vm.stop",
                        "--actor-id", "u-9", "--target-name", "train-a100-4"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    recs = asyncio.run(read_all(broker.bootstrap, topics[0], 3))
    assert len(recs) == 3
    flagged = next(parse_event(x.value) for x in recs if parse_event(x.value).action == "vm.stop")
    assert flagged.category == "vm" and flagged.description == "Stop VM train-a100-4"
