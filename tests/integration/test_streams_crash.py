"""``auditlog stream`` SIGKILLed mid-batch, then started again: nothing lost, at most one batch repeated per stream.

Real processes on one chDB directory (one process at a time: chDB allows one engine per directory): a set-up
process stores events of two orgs on two Kafka partitions and creates two streams of acme (everything, and its
failed events only) towards a real HTTP receiver on 127.0.0.1; a first ``auditlog stream`` delivers until each
stream has a batch in flight that the receiver holds unanswered, and is SIGKILLed there; a second one, started on
the same directory, takes the streams over once the dead one's leases expired and delivers the rest. Per stream,
the event ids received (first sightings) are exactly the stored ones the stream matches, each partition in offset
order; the only ones received twice are those of the batch that was in flight at the kill; the saved delivery
counts each event once; no secret is in either process's log.

The same with ``auditlog up`` (the deliverer in its process) SIGKILLed mid-batch and restarted on its data
directory: the stream created and the events ingested through its API, the receiver gets every acme event of the
stream's filter once in order, and the held batch once more; the API shows the stream caught up, ``active``, its
secret masked; the secret is in no response and no line ``up`` printed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditlogkit.query_api.security.auth import mint_token
from auditlogkit.query_api.streams.keys import new_key_text
from auditlogkit.server.broker import free_port
from tests.factories import make_event
from tests.integration.streams_helpers import TOPIC, Received, Receiver
from tests.updemo import AUDITLOG, stop_up_demo_pid, wait_ready

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec-crash-0123456789-abcdef"
BATCH = 20
LEASE_S = 4.0  # a send may take up to 4/5 of it: the held request outlives the wait for the kill
HELD = 2  # each stream's 2nd request is held unanswered until the kill

SETUP = """
import json, sys
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from auditlogkit.query_api.streams.keys import streams_key
from auditlogkit.query_api.streams.store import StreamStore
from auditlogkit.schemas.catalog import get_catalog
from tests.integration.streams_helpers import put_events

url, secret, placed = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
s = Settings()
store = Store(s.store_url, s.clickhouse_database)
migrate(store)
assert s.streams_key is not None
repo = StreamStore.from_settings(store, s, get_catalog(), streams_key(s.streams_key.get_secret_value()))
ids = {"all": repo.create("acme", "all", {"type": "webhook", "url": url + "/all", "secret": secret}).id,
       "failed": repo.create("acme", "failed", {"type": "webhook", "url": url + "/failed", "secret": secret},
                             {"status": "FAILED"}).id}
for partition, events in placed.items():
    put_events(store, events, int(partition))
print(json.dumps(ids))
"""

STATUS = """
import json
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from auditlogkit.query_api.streams.keys import streams_key
from auditlogkit.query_api.streams.store import StreamStore
from auditlogkit.schemas.catalog import get_catalog

s = Settings()
assert s.streams_key is not None
repo = StreamStore.from_settings(Store(s.store_url, s.clickhouse_database), s, get_catalog(),
                                 streams_key(s.streams_key.get_secret_value()))
print(json.dumps({x.id: {"state": x.status, "delivered": x.delivery.delivered if x.delivery else None,
                         "lag": repo.lag_seconds(x)} for x in repo.list_all()}))
"""


def env_for(data: Path, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITLOG_")}
    env.update(AUDITLOG_DATA_DIR=str(data), AUDITLOG_CLICKHOUSE_URL=f"chdb://{data / 'chdb'}",
               AUDITLOG_STREAMS_KEY=key, AUDITLOG_STREAMS_ALLOW_HOSTS="127.0.0.1", AUDITLOG_TOPIC=TOPIC,
               AUDITLOG_STREAMS_BATCH_MAX_EVENTS=str(BATCH), AUDITLOG_STREAMS_BATCH_SECONDS="0.1",
               AUDITLOG_STREAMS_LEASE_SECONDS=str(LEASE_S), AUDITLOG_STREAMS_BACKOFF_MAX_SECONDS="1")
    return env


def python(code: str, env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def stream_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen([sys.executable, "-m", "auditlogkit.server.app.cli", "stream"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=f)


def wait_until(check: Any, timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"auditlog stream exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def test_sigkill_of_the_deliverer_mid_batch_loses_nothing_and_repeats_at_most_the_batch(tmp_path: Path) -> None:
    placed: dict[int, list[dict[str, Any]]] = {
        p: [make_event(org_id="globex" if i % 3 == 0 else "acme", status="FAILED" if i % 2 else "SUCCESS")
            for i in range(120)] for p in (0, 1)}
    want: dict[str, dict[int, list[str]]] = {
        "all": {p: [e["event_id"] for e in evs if e["org_id"] == "acme"] for p, evs in placed.items()},
        "failed": {p: [e["event_id"] for e in evs if e["org_id"] == "acme" and e["status"] == "FAILED"]
                   for p, evs in placed.items()}}

    release = threading.Event()
    held: dict[str, Received] = {}
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def respond(req: Received, n: int) -> tuple[int, dict[str, str], bytes]:
        with lock:
            counts[req.path] += 1
            hold = counts[req.path] == HELD
            if hold:
                held[req.path] = req
        if hold:
            release.wait(60)  # answered only after the deliverer was killed: its ack is lost
        return 200, {}, b"ok"

    rx = Receiver(respond)
    first: subprocess.Popen[bytes] | None = None
    second: subprocess.Popen[bytes] | None = None
    try:
        env = env_for(tmp_path, new_key_text())
        (tmp_path / "events.json").write_text(json.dumps(placed))
        ids = json.loads(python(SETUP, env, rx.url, SECRET, str(tmp_path / "events.json")))
        name_of = {sid: name for name, sid in ids.items()}

        log1 = tmp_path / "stream-1.log"
        first = stream_process(env, log1)
        wait_until(lambda: len(held) == 2, 60, "a batch of each stream in flight", first, log1)
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        release.set()

        def complete() -> bool:
            got = {name_of[sid]: set(e["event_id"] for e in rx.events(sid)) for sid in ids.values()}
            return all(got[name] >= {eid for ps in want[name].values() for eid in ps} for name in want)

        log2 = tmp_path / "stream-2.log"
        second = stream_process(env, log2)
        wait_until(complete, 45, "every event after the restart", second, log2)
        time.sleep(0.5)  # (the last batch's position is saved)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log2.read_text()[-3000:]
        status = json.loads(python(STATUS, env))
    finally:
        release.set()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        rx.close()

    for name, sid in ids.items():
        received = [(e["event_id"], e) for e in rx.events(sid)]
        assert {e["org_id"] for _, e in received} == {"acme"}, name
        seen = list(dict.fromkeys(eid for eid, _ in received))
        for p, ids_of_p in want[name].items():  # nothing lost, nothing extra, each partition in offset order
            in_p = set(ids_of_p)
            assert [eid for eid in seen if eid in in_p] == ids_of_p, (name, p)
        assert len(seen) == sum(len(v) for v in want[name].values()), name
        # repeated: exactly the batch that was in flight at the kill, once more
        batch = [e["event_id"] for e in held[f"/{name}"].lines()]
        assert 0 < len(batch) <= BATCH
        repeated = Counter(eid for eid, _ in received) - Counter(seen)
        assert repeated == Counter(batch), name
        # the saved delivery counts each event once; caught up, not failing
        assert status[sid] == {"state": "active", "delivered": len(seen), "lag": 0.0}, (name, status[sid])
    logs = log1.read_text() + log2.read_text()
    assert "stream.delivered" in log1.read_text() and "stream.leased" in log2.read_text()
    assert SECRET not in logs and SECRET not in json.dumps(status)


# ----- the same with the deliverer inside `auditlog up` -------------------------------------------------------------
JWT = "streams-crash-jwt-secret-0123456789abcdef"


@dataclass
class Up:
    proc: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)


def start_up(data: Path, port: int, kafka_port: int, extra: dict[str, str], timeout: float = 60) -> Up:
    """``auditlog up`` (not the demo) on 127.0.0.1; returns once it printed READY."""
    proc = subprocess.Popen([AUDITLOG, "up", "--port", str(port), "--kafka-port", str(kafka_port), "--data", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**{k: v for k, v in os.environ.items() if not k.startswith("AUDITLOG_")},
                                 "AUDITLOG_JWT_SECRET": JWT, "AUDITLOG_SESSION_TIMEOUT_MS": "3000",
                                 "AUDITLOG_API_RATE_PER_SECOND": "0", "AUDITLOG_API_INGEST_RATE_PER_SECOND": "0",
                                 **extra})
    lines = wait_ready(proc, timeout)
    url = re.search(r"Page\s+(\S+)", "".join(lines))
    assert url, "".join(lines)
    return Up(proc, url.group(1).rstrip("/"), lines)


def test_sigkill_of_up_mid_batch_loses_nothing_and_repeats_at_most_the_batch(tmp_path: Path) -> None:
    release = threading.Event()
    held: list[Received] = []

    def respond(req: Received, n: int) -> tuple[int, dict[str, str], bytes]:
        if n == HELD:
            held.append(req)
            release.wait(60)  # answered only after `up` was killed: its ack is lost
        return 200, {}, b"ok"

    rx = Receiver(respond)
    data, ports = tmp_path / "data", (free_port(), free_port())
    extra = {"AUDITLOG_STREAMS_ALLOW_HOSTS": "127.0.0.1", "AUDITLOG_STREAMS_BATCH_MAX_EVENTS": str(BATCH),
             "AUDITLOG_STREAMS_BATCH_SECONDS": "0.1", "AUDITLOG_STREAMS_LEASE_SECONDS": str(LEASE_S),
             "AUDITLOG_STREAMS_BACKOFF_MAX_SECONDS": "1"}
    owner = {"Authorization": "Bearer " + mint_token(JWT, sub="u-owner", email="owner@acme.example", org_id="acme",
                                                     role="org_owner", permissions=["audit:read", "audit:stream"])}
    service = {"Authorization": "Bearer " + mint_token(JWT, sub="svc", role="service", write_orgs=["acme", "globex"]),
               "Content-Type": "application/x-ndjson"}
    events = [make_event(org_id="globex" if i % 4 == 0 else "acme") for i in range(160)]
    want = [e["event_id"] for e in events if e["org_id"] == "acme"]
    first: Up | None = None
    second: Up | None = None
    try:
        first = start_up(data, *ports, extra)
        # the vm events only: the stream's own audit_log.stream_create record is acme's too
        created = httpx.post(f"{first.url}/v1/streams", headers=owner, timeout=10, json={
            "name": "vm", "filters": {"category": "vm"},
            "destination": {"type": "webhook", "url": rx.url + "/vm", "secret": SECRET}})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        for i in range(0, len(events), 40):  # acme's events on one partition (keyed by org), in this order
            body = "".join(json.dumps(e) + "\n" for e in events[i:i + 40])
            r = httpx.post(f"{first.url}/v1/ingest", headers=service, content=body, timeout=30)
            assert r.status_code == 202 and r.json()["rejected"] == [], r.text
        deadline = time.monotonic() + 30
        while not held:
            assert first.proc.poll() is None and time.monotonic() < deadline, "".join(first.lines[-40:])
            time.sleep(0.05)
        first.proc.send_signal(signal.SIGKILL)  # (its broker's processes die with it: PR_SET_PDEATHSIG)
        assert first.proc.wait(10) == -signal.SIGKILL
        release.set()

        second = start_up(data, *ports, extra)
        deadline = time.monotonic() + 45
        while True:
            shown = httpx.get(f"{second.url}/v1/streams/{sid}", headers=owner, timeout=10)
            assert shown.status_code == 200, shown.text
            s = shown.json()
            if s["delivered"] >= len(want) and s["state"] == "active" and s["lag_seconds"] == 0:
                break
            assert time.monotonic() < deadline, (s, "".join(second.lines[-40:]))
            time.sleep(0.2)
        listed = httpx.get(f"{second.url}/v1/streams", headers=owner, timeout=10)
        assert second.proc.poll() is None
        assert stop_up_demo_pid(second.proc) == 0, "".join(second.lines[-40:])
    finally:
        release.set()
        for u in (first, second):
            if u is not None:
                stop_up_demo_pid(u.proc, 10)
        rx.close()

    received = [e["event_id"] for e in rx.events(sid)]
    assert {e["org_id"] for e in rx.events(sid)} == {"acme"}
    seen = list(dict.fromkeys(received))
    assert seen == want  # nothing lost, nothing extra, in the store's order
    batch = [e["event_id"] for e in held[0].lines()]
    assert 0 < len(batch) <= BATCH
    assert Counter(received) - Counter(seen) == Counter(batch)  # only the batch in flight came twice
    assert s["delivered"] == len(want) and s["destination"]["secret"] == "••••" + SECRET[-4:]
    for text in (created.text, shown.text, listed.text, "".join(first.lines), "".join(second.lines)):
        assert SECRET not in text
