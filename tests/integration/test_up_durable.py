"""Acknowledged means stored: ``auditlog up`` as a real process group, SIGKILLed again and again while a foreign
Kafka client (kafka-python, ``acks=all``) and ``POST /v1/ingest`` publish, restarted on the same data directory
each time; in the end every event the broker acknowledged (Kafka) or the API accepted (``202``) is stored.
And the broker alone SIGKILLed: ``/readyz`` red at once, the broker back within seconds, nothing acknowledged
lost, and SIGTERM of ``up`` afterwards done within 10 s without a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError

from auditlogkit.query_api.security.auth import mint_token
from auditlogkit.server.broker import free_port
from tests.factories import make_event
from tests.updemo import AUDITLOG, stop_up_demo_pid, wait_ready

pytestmark = pytest.mark.slow
SECRET = "durable-test-secret-0123456789abcdef0123"
ORG = "durable"
ROUNDS = 5


@dataclass
class Up:
    proc: subprocess.Popen[str]
    url: str
    bootstrap: str
    topic: str
    lines: list[str] = field(default_factory=list)


def start_up(data: Path, port: int, kafka_port: int, timeout: float = 90, extra: tuple[str, ...] = ()) -> Up:
    """``auditlog up`` in a process group of its own; returns once it printed READY."""
    proc = subprocess.Popen(
        [AUDITLOG, "up", "--port", str(port), "--kafka-port", str(kafka_port), "--data", str(data), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "AUDITLOG_JWT_SECRET": SECRET, "AUDITLOG_SESSION_TIMEOUT_MS": "3000",
             "AUDITLOG_API_RATE_PER_SECOND": "0", "AUDITLOG_API_INGEST_RATE_PER_SECOND": "0"})
    lines = wait_ready(proc, timeout)
    text = "".join(lines)
    url = re.search(r"Page\s+(\S+)", text)
    broker = re.search(r"Broker\s+(\S+)\s+topics: ([^,]+),", text)
    assert url and broker, text
    return Up(proc, url.group(1).rstrip("/"), broker.group(1), broker.group(2), lines)


def service_token() -> str:
    return mint_token(SECRET, sub="svc-durable", role="service", write_orgs=[ORG], ttl_seconds=3600)


def owner_token() -> str:
    return mint_token(SECRET, sub="u-owner", email="owner@durable.example", org_id=ORG, role="org_owner",
                      ttl_seconds=3600)


class Publishers:
    """Kafka (kafka-python, acks=all) and HTTP ingest publishing in threads until :meth:`stop`; what each path
    acknowledged is collected."""

    def __init__(self, up: Up) -> None:
        self.up = up
        self.kafka_acked: set[str] = set()
        self.http_acked: set[str] = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._kafka, daemon=True),
                         threading.Thread(target=self._http, daemon=True)]
        for t in self._threads:
            t.start()

    def _kafka(self) -> None:
        try:
            p = KafkaProducer(bootstrap_servers=self.up.bootstrap, acks="all", linger_ms=5, retries=0,
                              request_timeout_ms=3000, max_block_ms=3000, api_version=(2, 5))
        except KafkaError:
            return
        try:
            while not self._stop.is_set():
                sent = []
                for _ in range(50):
                    ev = make_event(org_id=ORG, event_id=str(uuid.uuid4()))
                    sent.append((ev["event_id"], p.send(self.up.topic, json.dumps(ev).encode(), key=ORG.encode())))
                p.flush(timeout=3)
                for eid, fut in sent:
                    if fut.succeeded():
                        self.kafka_acked.add(eid)
                if any(not f.succeeded() for _, f in sent):
                    return
        except KafkaError:
            return
        finally:
            with contextlib.suppress(KafkaError):  # unacknowledged sends of a killed broker time out here
                p.close(timeout=0)

    def _http(self) -> None:
        h = {"Authorization": f"Bearer {service_token()}", "Content-Type": "application/x-ndjson"}
        with httpx.Client(base_url=self.up.url, timeout=5) as c:
            while not self._stop.is_set():
                evs = [make_event(org_id=ORG, event_id=str(uuid.uuid4())) for _ in range(20)]
                body = "\n".join(json.dumps(e) for e in evs).encode()
                try:
                    r = c.post("/v1/ingest", content=body, headers=h)
                except httpx.HTTPError:
                    return
                if r.status_code not in (200, 202):
                    return
                rejected = {x["index"] for x in r.json()["rejected"]}
                assert not rejected, r.text[:300]
                self.http_acked.update(e["event_id"] for e in evs)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


def stored_ids(up: Up) -> set[str]:
    r = httpx.get(f"{up.url}/v1/events/export", params={"format": "ndjson", "start": "2000-01-01T00:00:00Z"},
                  headers={"Authorization": f"Bearer {owner_token()}"}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    return {json.loads(line)["event_id"] for line in r.text.splitlines() if line.strip()}


def wait_stored(up: Up, want: set[str], timeout: float = 60) -> set[str]:
    """The ids of ``want`` still missing after ``timeout`` (empty as soon as all are stored)."""
    deadline = time.monotonic() + timeout
    while (missing := want - stored_ids(up)) and time.monotonic() < deadline:
        time.sleep(1)
    return missing


def sigterm_within(up: Up, seconds: float) -> float:
    t0 = time.monotonic()
    os.kill(up.proc.pid, signal.SIGTERM)
    up.proc.wait(seconds + 20)
    took = time.monotonic() - t0
    assert up.proc.returncode == 0, "".join(up.lines[-30:])
    assert "Traceback" not in "".join(up.lines), "".join(up.lines)
    return took


@pytest.fixture
def ports() -> Iterator[tuple[int, int]]:
    yield free_port(), free_port()


def test_sigkill_of_the_whole_up_loses_no_acknowledged_event(tmp_path: Path, ports: tuple[int, int]) -> None:
    data = tmp_path / "data"
    kafka_acked: set[str] = set()
    http_acked: set[str] = set()
    for _ in range(ROUNDS):
        up = start_up(data, *ports)
        pubs = Publishers(up)
        time.sleep(1.5)
        os.killpg(up.proc.pid, signal.SIGKILL)  # everything in its process group, mid-publish
        up.proc.wait(10)
        pubs.stop()
        kafka_acked |= pubs.kafka_acked
        http_acked |= pubs.http_acked
    assert len(kafka_acked) > 500 and len(http_acked) > 100, (len(kafka_acked), len(http_acked))
    up = start_up(data, *ports)
    try:
        missing = wait_stored(up, kafka_acked | http_acked)
        assert not missing, (f"{len(missing & kafka_acked)} of {len(kafka_acked)} Kafka-acknowledged and "
                             f"{len(missing & http_acked)} of {len(http_acked)} HTTP-accepted events lost")
        assert sigterm_within(up, 10) < 10
    finally:
        stop_up_demo_pid(up.proc, 5)


def _part_pids(up: Up) -> dict[str, int]:
    """PIDs of up's broker children: the Tansu binary and the storage process (from /proc)."""
    out = {}
    for task in Path(f"/proc/{up.proc.pid}/task").iterdir():
        for c in (task / "children").read_text().split():
            cmd = Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")
            if b"broker" in cmd and b"--storage-engine" in cmd:  # the Tansu binary's arguments
                out["broker"] = int(c)
            elif b"auditlogkit.server.s3disk" in cmd:
                out["broker_storage"] = int(c)
    return out


def readyz(up: Up) -> httpx.Response:
    return httpx.get(f"{up.url}/readyz", timeout=10)


@pytest.mark.parametrize("part", ["broker", "broker_storage"])
def test_a_killed_broker_part_is_restarted_and_loses_nothing(tmp_path: Path, ports: tuple[int, int],
                                                               part: str) -> None:
    up = start_up(tmp_path / "data", *ports)
    try:
        pids = _part_pids(up)
        assert set(pids) == {"broker", "broker_storage"}, pids
        pubs = Publishers(up)
        time.sleep(1.0)
        os.kill(pids[part], signal.SIGKILL)
        t0 = time.monotonic()
        red = False
        while time.monotonic() - t0 < 2:
            r = readyz(up)
            if r.status_code == 503 and r.json()["parts"][part] == "down":
                red = True
                break
            time.sleep(0.05)
        # red within 2 s of the kill, or already restarted by then (up looks every 0.5 s and a broker part
        # starts in ~0.1 s, so a poll may fall on either side of the short red window)
        assert red or _part_pids(up).get(part) != pids[part], "/readyz was not red within 2 s"
        while readyz(up).status_code != 200 or _part_pids(up).get(part) in (None, pids[part]):
            assert time.monotonic() - t0 < 10, f"not back within 10 s of the kill: {readyz(up).text}"
            time.sleep(0.2)
        back_s = time.monotonic() - t0
        pubs.stop()  # publishing went on through the kill and the restart
        assert back_s < 10
        # acknowledged before and after the kill: all stored; publishing works again
        again = Publishers(up)
        time.sleep(1.0)
        again.stop()
        assert again.kafka_acked and again.http_acked
        acked = pubs.kafka_acked | pubs.http_acked | again.kafka_acked | again.http_acked
        assert not wait_stored(up, acked)
        assert sigterm_within(up, 10) < 10
    finally:
        stop_up_demo_pid(up.proc, 5)


def test_sigterm_while_the_broker_is_dead_stops_within_10_s(tmp_path: Path, ports: tuple[int, int]) -> None:
    up = start_up(tmp_path / "data", *ports)
    try:
        pubs = Publishers(up)
        time.sleep(1.0)
        pids = _part_pids(up)
        os.kill(pids["broker_storage"], signal.SIGKILL)
        os.kill(pids["broker"], signal.SIGKILL)
        took = sigterm_within(up, 10)
        pubs.stop()
        assert took < 10, took
    finally:
        stop_up_demo_pid(up.proc, 5)


def test_ephemeral_up_runs_the_memory_broker_and_stores_what_it_is_sent(tmp_path: Path,
                                                                       ports: tuple[int, int]) -> None:
    up = start_up(tmp_path / "data", *ports, extra=("--ephemeral",))
    try:
        assert set(_part_pids(up)) == {"broker"}  # no storage process: the broker keeps its log in memory
        assert "broker_storage" not in readyz(up).json()["parts"]
        pubs = Publishers(up)
        time.sleep(1.0)
        pubs.stop()
        assert pubs.kafka_acked and pubs.http_acked
        assert not wait_stored(up, pubs.kafka_acked | pubs.http_acked)
        assert sigterm_within(up, 10) < 10
    finally:
        stop_up_demo_pid(up.proc, 5)
