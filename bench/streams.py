"""Log streams under load: produce -> received at ``--rate`` events/s into ``auditlog up`` with 10 streams.

Processes (the server's work, the producer's, the receivers' and this process's never share a GIL):
- ``auditlog up``: a subprocess on a fresh data directory and free loopback ports, its broker ``--ephemeral``
  (memory) unless ``--durable``, with ``AUDITLOG_STREAMS_ALLOW_HOSTS=127.0.0.1``, ``AUDITLOG_API_RATE_PER_SECOND=0``
  and log level ``warning``; its streams key is the one ``up`` generates into its data directory;
- the receivers: one HTTP receiver (this file with ``--receive``, a small asyncio HTTP/1.1 server) for the webhook,
  Splunk HEC and Datadog streams, which appends every request (arrival time, path, body) to a file and answers
  200 / 202 at once; ``python -m auditlogkit.server.s3disk`` for the S3 streams (an object's arrival is its file's mtime);
- the producer (this file with ``--produce``): ``auditlogkit.producer.AuditProducer`` publishing ``--rate`` events/s
  for ``--seconds`` in bursts every 50 ms over the orgs of the ``--plan``: random catalog actions, 10 % FAILED, each
  event carrying its send time (``detail``: ``{"bench": <run>-<phase>, "sent_at": time.time()}``; occurred_at the
  same moment). The events are validated with its ``coerce_event`` before the clock starts and sent with
  ``send_raw``, so that the producer's CPU, which shares the machine, stays small. It writes every event it sent
  (id, org, workspace, scope, status, send time, ack) to a file;
- in this process: ``--readers`` callers (threads, each its own caller, owners of the first stream's org) of
  ``/v1/events?limit=50`` every ``--read-period`` s while the producer runs, and a ``/metrics`` probe every 100 ms
  (the consumer's stored count).

Steps: ``up`` idle, then the readers alone (``--idle-s`` each: calibration of the CPU model); phase A, the load
without streams; the plan's 10 streams created through ``POST /v1/streams`` (org owners' tokens with
``audit:stream``, ``start: now``); once the deliverer holds them all, ``--idle-s`` with the streams caught up and
nothing produced; phase B, the same load with the streams, then a drain until every stream received what it should
(or nothing arrived for ``--drain-s``).

Figures: per stream and overall, produce -> received p50/p95/max (receipt - ``sent_at``, every (stream, event) of
phase B) and p95 by 10 s of sending; events expected / received / missing / duplicated; delivered events/s while
producing; requests and events per request. Where the time goes: produce -> fetched by the consumer (the delivered
event's ``received_at``), -> stored (the probe's estimate; in phase A too), -> received, and a stream's cycle
(request to request). CPU of ``up`` with its children (broker, decode helper): the streams' share from a linear
model (idle rate x wall + per reader call x calls + per ingested event x events, fitted on the calibration and
phase A; the rest of phase B is the streams'), per delivered event and for caught-up idle streams.
``/v1/events?limit=50`` p50/p95 in A and B. The machine's busy share and what of it was not this bench's (the
machine may be shared). Prints a table and appends the run to ``bench/results/streams.json``.

    .venv/bin/python bench/streams.py [--plan tenants|firehose] [--rate 5000] [--seconds 60] [--durable]
        [--env AUDITLOG_STREAMS_BATCH_SECONDS=0.5] [--label text] [--no-write] [--json path]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
import psutil
from common import (
    ROOT,
    cpu_seconds_of,
    git_rev,
    latency_ms,
    machine,
    percentile,
    start_up,
    stop_proc,
    thread_cpu,
    up_token,
    write_result,
)

from auditlogkit.server.broker import free_port
from auditlogkit.server.settings import Settings

WORKSPACES = ("ml-research", "inference-prod", "data-platform")
S3_BUCKET = "bench-streams"
READ, STREAM = "audit:read", "audit:stream"


@dataclass(frozen=True)
class Spec:
    """One stream of the bench: its destination type, its org (the owner's token) and its filters."""

    name: str
    type: str
    org: str
    filters: dict[str, str] = field(default_factory=dict)

    def sees(self, r: dict[str, Any]) -> bool:
        """Whether the produced event ``r`` (a producer record) belongs to this stream."""
        keys = {"status": "status", "scope": "scope", "workspace_id": "ws"}
        return r["org"] == self.org and all(r[keys[k]] == v for k, v in self.filters.items())


@dataclass(frozen=True)
class Plan:
    """The orgs the producer spreads the events over (share of the events each) and the streams."""

    orgs: dict[str, float]
    streams: tuple[Spec, ...]
    about: str


# Both: 4 webhook, 2 splunk_hec, 2 datadog, 2 s3, six of them unfiltered (all of their org), four filtered
# (status=FAILED ~10 %, scope=service ~50 %, workspace_id=ml-research ~25 % of their org's events).
PLANS: dict[str, Plan] = {
    # ten tenants of 10 % of the load each, each with one stream: what a shared deployment looks like
    "tenants": Plan({f"t{i}": 0.1 for i in range(10)}, (
        Spec("webhook-t0", "webhook", "t0"),
        Spec("webhook-t1", "webhook", "t1"),
        Spec("webhook-t2-failed", "webhook", "t2", {"status": "FAILED"}),
        Spec("webhook-t3", "webhook", "t3"),
        Spec("splunk-t4", "splunk_hec", "t4"),
        Spec("splunk-t5-service", "splunk_hec", "t5", {"scope": "service"}),
        Spec("datadog-t6", "datadog", "t6"),
        Spec("datadog-t7-ws", "datadog", "t7", {"workspace_id": "ml-research"}),
        Spec("s3-t8", "s3", "t8"),
        Spec("s3-t9", "s3", "t9"),
    ), "10 orgs of 10 % each; one stream per org"),
    # one big org (90 %) with five unfiltered streams, each of them the whole firehose of that org
    "firehose": Plan({"acme": 0.9, "globex": 0.1}, (
        Spec("webhook-all", "webhook", "acme"),
        Spec("webhook-all-2", "webhook", "acme"),
        Spec("webhook-failed", "webhook", "acme", {"status": "FAILED"}),
        Spec("webhook-globex", "webhook", "globex"),
        Spec("splunk-all", "splunk_hec", "acme"),
        Spec("splunk-service", "splunk_hec", "acme", {"scope": "service"}),
        Spec("datadog-all", "datadog", "acme"),
        Spec("datadog-ws", "datadog", "acme", {"workspace_id": "ml-research"}),
        Spec("s3-all", "s3", "acme"),
        Spec("s3-globex", "s3", "globex"),
    ), "acme 90 %, globex 10 %; 8 streams on acme (5 unfiltered), 2 on globex"),
}


# ----- the producer process ---------------------------------------------------------------------------------
SENT_AT_SLOT = b'"sent_at":1000000000.25'  # in every event's JSON, set to the send time when it is sent
OCCURRED_SLOT = b'"occurred_at":"2000-01-01T00:00:00.000Z"'


async def produce(a: argparse.Namespace) -> None:
    """Every event is built and validated (the producer's own ``coerce_event``) before START; sending one is two
    byte replacements (send time, occurred_at: now) and ``AuditProducer.send_raw``, so that the producer's CPU,
    which shares the machine, stays small."""
    from auditlogkit.producer import AuditProducer, coerce_event
    from auditlogkit.schemas.catalog import get_catalog
    from tests.factories import make_event

    catalog = get_catalog()
    rng = random.Random(a.seed)
    orgs, weights = list(PLANS[a.plan].orgs), list(PLANS[a.plan].orgs.values())
    actions = [t for t in catalog.all_actions() if t[1] != "audit_log"]
    burst_ms = 50.0
    per_burst = max(1, round(a.rate * burst_ms / 1000))
    bursts = max(1, round(a.seconds * 1000 / burst_ms))
    recs: list[dict[str, Any]] = []
    values: list[tuple[bytes, str]] = []
    for n in range(per_burst * bursts):
        org = rng.choices(orgs, weights)[0]
        ws = rng.choice([*WORKSPACES, None])
        status = "FAILED" if rng.random() < 0.1 else "SUCCESS"
        scope, category, action = rng.choice(actions)
        eid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ev = make_event(event_id=eid, org_id=org, workspace_id=ws, status=status, scope=scope, category=category,
                        action=action, occurred_at="2000-01-01T00:00:00.000Z",
                        actor={"id": f"u-{n % 40}", "email": f"user{n % 40}@{org}.example"},
                        target={"type": category, "id": f"{category}-{n}", "name": f"{category}-{n}"},
                        description=f"bench streams event {n}", detail={"bench": a.tag, "sent_at": 1000000000.25,
                                                                        "seq": n})
        value = coerce_event(ev, catalog).to_json_bytes()
        assert value.count(SENT_AT_SLOT) == 1 and value.count(OCCURRED_SLOT) == 1, value
        values.append((value, org))
        recs.append({"id": eid, "org": org, "ws": ws, "status": status, "scope": scope, "sent_at": 0.0})
    futs: list[Any] = []
    late: list[float] = []
    async with AuditProducer(a.bootstrap, a.topic) as p:
        await p.reachable()
        print("START", flush=True)
        t0 = time.monotonic()
        i = 0
        for b in range(bursts):
            due = t0 + b * burst_ms / 1000
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            late.append(time.monotonic() - due)
            for _ in range(per_burst):
                value, org = values[i]
                sent = time.time()
                now = datetime.fromtimestamp(sent, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
                value = value.replace(SENT_AT_SLOT, b'"sent_at":' + repr(sent).encode()).replace(
                    OCCURRED_SLOT, b'"occurred_at":"' + now.encode() + b'Z"')
                futs.append(await p.send_raw(value, org))
                recs[i]["sent_at"] = sent
                i += 1
        produce_s = time.monotonic() - t0
        acks = await asyncio.gather(*futs, return_exceptions=True)
    for r, ack in zip(recs, acks, strict=True):
        r["acked"] = not isinstance(ack, BaseException)
    Path(a.out).write_text(json.dumps({"events": recs, "produce_s": produce_s, "burst_size": per_burst,
                                       "late_p99_ms": round(percentile(late, 99) * 1000, 1),
                                       "late_max_ms": round(max(late) * 1000, 1)}))
    print("DONE", flush=True)


# ----- the HTTP receiver process ----------------------------------------------------------------------------
async def receive(a: argparse.Namespace) -> None:
    """Record every request (``{"t", "path", "n"}`` line, then its body of n bytes and a newline) and answer at once;
    ``GET /stats``: per stream (``/r/<name>/...``) [requests, occurrences of ``--marker`` in the bodies]."""
    out = open(a.out, "wb", buffering=1 << 20)  # noqa: SIM115 - closed when the server stops
    marker = a.marker.encode()
    counts: dict[str, list[int]] = {}
    stop = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                n = 0
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    if k.strip().lower() == "content-length":
                        n = int(v.strip())
                body = await reader.readexactly(n) if n else b""
                t = time.time()
                if method == "GET" and target == "/stats":
                    status, reply = 200, json.dumps(counts).encode()
                else:
                    name = target.split("/")[2] if target.startswith("/r/") else "?"
                    out.write(json.dumps({"t": t, "path": target, "n": len(body)}).encode() + b"\n" + body + b"\n")
                    c = counts.setdefault(name, [0, 0])
                    c[0] += 1
                    c[1] += body.count(marker)
                    if target.endswith("/api/v2/logs"):
                        status, reply = 202, b"{}"
                    else:
                        status, reply = 200, b'{"text":"Success","code":0}'
                writer.write(f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: "
                             f"{len(reply)}\r\n\r\n".encode() + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(handle, "127.0.0.1", a.port, limit=1 << 16)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()
    out.close()


def start_receiver(out: Path, marker: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, __file__, "--receive", "--port", "0", "--out", str(out), "--marker",
                             marker], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
                            stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        stop_proc(proc, 5)
        raise RuntimeError(f"receiver: {line!r}")
    return proc, int(line.split()[1])


def start_s3disk(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "auditlogkit.server.s3disk", "--root", str(root), "--port", str(port),
                             "--janitor-seconds", "0"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            with httpx.Client(timeout=2) as c:
                c.head(f"http://127.0.0.1:{port}/{S3_BUCKET}")
            return proc, port
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_proc(proc, 5)
                raise RuntimeError("s3disk did not start") from None
            time.sleep(0.1)


# ----- what arrived -----------------------------------------------------------------------------------------
_EID = re.compile(rb'\\*"event_id\\*":\s*\\*"([0-9a-f-]{36})')
_SENT = re.compile(rb'\\*"sent_at\\*":\s*([0-9.eE+-]+)')
_RECV = re.compile(rb'\\*"received_at\\*":\s*\\*"([0-9T:.+Z-]+)')


@dataclass
class Arrivals:
    """One stream's receipts: per request (time, events in it) and per bench event its receipt times."""

    requests: list[tuple[float, int]] = field(default_factory=list)
    events: dict[str, list[float]] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)
    other: int = 0


def _chunks(kind: str, body: bytes) -> list[bytes]:
    """The body's events as byte strings (one per event), whatever the destination's framing."""
    if kind == "datadog":
        return body.split(b'{"ddsource"')[1:]
    return [line for line in body.split(b"\n") if line.strip()]


def _take(arr: Arrivals, kind: str, body: bytes, t: float, marker: bytes) -> None:
    chunks = _chunks(kind, body)
    arr.requests.append((t, len(chunks)))
    for ch in chunks:
        if marker not in ch:
            arr.other += 1
            continue
        m = _EID.search(ch)
        if m is None:
            arr.other += 1
            continue
        eid = m.group(1).decode()
        arr.events.setdefault(eid, []).append(t)
        if eid not in arr.sent_at:
            s, r = _SENT.search(ch), _RECV.search(ch)
            if s is not None:
                arr.sent_at[eid] = float(s.group(1))
            if r is not None:
                arr.received_at[eid] = datetime.fromisoformat(r.group(1).decode().replace("Z", "+00:00")).timestamp()


def read_http(path: Path, plan: dict[str, Spec], marker: bytes) -> dict[str, Arrivals]:
    out = {name: Arrivals() for name, s in plan.items() if s.type != "s3"}
    with path.open("rb") as f:
        while head := f.readline():
            meta = json.loads(head)
            body = f.read(meta["n"])
            f.read(1)
            parts = meta["path"].split("/")
            name = parts[2] if len(parts) > 2 and parts[1] == "r" else "?"
            if name in out:
                _take(out[name], plan[name].type, body, meta["t"], marker)
    return out


def s3_objects(root: Path, name: str) -> list[Path]:
    base = root / S3_BUCKET / name
    return sorted(base.rglob("*.ndjson.gz")) if base.exists() else []


def read_s3(root: Path, plan: dict[str, Spec], marker: bytes) -> dict[str, Arrivals]:
    out: dict[str, Arrivals] = {}
    for name, s in plan.items():
        if s.type != "s3":
            continue
        arr = out[name] = Arrivals()
        for obj in sorted(s3_objects(root, name), key=lambda p: p.stat().st_mtime_ns):
            _take(arr, "s3", gzip.decompress(obj.read_bytes()), obj.stat().st_mtime_ns / 1e9, marker)
    return out


class S3Counter:
    """Bench events in each S3 stream's objects so far (an object is written once: each is read once)."""

    def __init__(self, root: Path, marker: bytes) -> None:
        self.root, self.marker = root, marker
        self.seen: dict[Path, int] = {}

    def count(self, name: str) -> int:
        for obj in s3_objects(self.root, name):
            if obj not in self.seen:
                with contextlib.suppress(OSError, EOFError):
                    self.seen[obj] = gzip.decompress(obj.read_bytes()).count(self.marker)
        prefix = self.root / S3_BUCKET / name
        return sum(n for p, n in self.seen.items() if prefix in p.parents)


# ----- the readers, the probe, CPU ----------------------------------------------------------------------------
class Readers:
    """A caller of ``path`` per token (a thread each), one call every ``period`` s (the next at once when a call
    took longer), until :meth:`stop`."""

    def __init__(self, url: str, tokens: list[str], period: float, path: str = "/v1/events?limit=50") -> None:
        self.url, self.tokens, self.path, self.period = url, tokens, path, period
        self.lat: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._one, args=(t,), daemon=True) for t in tokens]

    def _one(self, token: str) -> None:
        h = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = c.get(self.path, headers=h)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - t0
                if ok:
                    self.lat.append(took)
                else:
                    self.errors += 1
                self._stop.wait(max(0.0, self.period - took))

    def start(self) -> Readers:
        for t in self._threads:
            t.start()
        return self

    def halt(self) -> None:
        self._stop.set()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        for t in self._threads:
            t.join(35)
        return {"requests": len(self.lat), "errors": self.errors, **latency_ms(self.lat)}


def metric_values(text: str, name: str) -> dict[str, float]:
    """``name``'s samples by their label text (Prometheus text format); unlabelled as ``""``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            labels = key[len(name):]
            m = re.search(r'stream="([^"]+)"', labels)
            out[m.group(1) if m else labels] = float(value)
    return out


class Probe:
    """``/metrics`` every ``period`` s: (time.time(), the consumer's stored-events count)."""

    def __init__(self, url: str, period: float = 0.1) -> None:
        self.url, self.period = url, period
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self._stop.is_set():
                t0 = time.time()
                with contextlib.suppress(httpx.HTTPError):
                    text = c.get(self.url + "/metrics").text
                    v = sum(metric_values(text, "auditlog_consumer_events_stored_total").values())
                    self.samples.append(((t0 + time.time()) / 2, v))
                self._stop.wait(max(0.0, self.period - (time.time() - t0)))

    def start(self) -> Probe:
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join(15)
        return self.samples


class Cpu:
    """CPU seconds (user + system, psutil) of ``up`` with its child processes, and of the other processes."""

    def __init__(self, up_pid: int, others: dict[str, int]) -> None:
        self.up = psutil.Process(up_pid)
        self.others = {k: psutil.Process(pid) for k, pid in others.items()}
        self.children: dict[int, psutil.Process] = {}

    def snap(self) -> dict[str, Any]:
        with contextlib.suppress(psutil.Error):
            for ch in self.up.children(recursive=True):
                self.children.setdefault(ch.pid, ch)
        kids = 0.0
        for ch in self.children.values():
            with contextlib.suppress(psutil.Error):
                kids += cpu_seconds_of(ch)
        out: dict[str, Any] = {"t": time.monotonic(), "up_process": cpu_seconds_of(self.up), "up_children": kids}
        for k, p in self.others.items():
            with contextlib.suppress(psutil.Error):
                out[k] = cpu_seconds_of(p)
        out["threads"] = thread_cpu(self.up.pid, main="main (event loop)")
        host = psutil.cpu_times()
        out["host_busy"] = float(sum(host)) - host.idle - getattr(host, "iowait", 0.0)
        return out

    def add(self, name: str, pid: int) -> None:
        self.others[name] = psutil.Process(pid)


def cpu_between(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    wall = b["t"] - a["t"]
    secs = {k: round(b[k] - a.get(k, b[k]), 2) for k in b if k not in ("t", "threads", "host_busy")}
    up = secs["up_process"] + secs["up_children"]
    host = b["host_busy"] - a["host_busy"]
    threads = {k: b["threads"][k] - a["threads"].get(k, 0.0) for k in b["threads"]}
    top = dict(sorted(((k, round(v / wall * 100, 1)) for k, v in threads.items() if v / wall >= 0.005),
                      key=lambda kv: -kv[1])[:10])
    return {"wall_s": round(wall, 2), "cpu_s": secs, "up_total_s": round(up, 2),
            "up_mean_pct": round(up / wall * 100, 1),
            "mean_pct": {k: round(v / wall * 100, 1) for k, v in secs.items()}, "up_threads_pct": top,
            "host_busy_pct": round(host / wall * 100, 1),
            "others_on_host_pct": round((host - sum(secs.values())) / wall * 100, 1)}


def stored_estimate(ph: dict[str, Any]) -> dict[str, float]:
    """When each event was stored (estimate, by event id): the n-th acknowledged event sent counts as stored when
    the consumer's stored count (the probe's) first reached n more than at the start of the phase."""
    out: dict[str, float] = {}
    samples = ph["probe"].samples
    if not samples:
        return out
    base = samples[0][1]
    j = 0
    for n, r in enumerate(sorted(ph["acked"], key=lambda r: r["sent_at"]), start=1):
        while j < len(samples) and samples[j][1] - base < n:
            j += 1
        if j == len(samples):
            break
        out[r["id"]] = samples[j][0]
    return out


# ----- helpers ----------------------------------------------------------------------------------------------
def consumer_status(c: httpx.Client, url: str) -> dict[str, Any]:
    return dict(c.get(url + "/readyz").json().get("consumer", {}))


def wait_consumed(c: httpx.Client, url: str, base: int, n: int, timeout: float = 600.0) -> None:
    """Until the consumer consumed ``n`` messages more than ``base`` and has no lag."""
    deadline = time.monotonic() + timeout
    while True:
        s = consumer_status(c, url)
        if int(s.get("consumed", 0)) >= base + n and int(s.get("lag_total", 1)) == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"consumer: {s}")
        time.sleep(0.2)


def run_producer(a: argparse.Namespace, kafka_port: int, topic: str, tag: str, out: Path,
                 seed: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--produce", "--bootstrap", f"127.0.0.1:{kafka_port}", "--topic", topic,
         "--rate", str(a.rate), "--seconds", str(a.seconds), "--tag", tag, "--out", str(out), "--seed", str(seed),
         "--plan", a.plan],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True, stdout=subprocess.PIPE,
        start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("START"):
        stop_proc(proc, 5)
        raise RuntimeError(f"producer: {line!r}")
    return proc


def destination(s: Spec, recv_url: str, s3_port: int) -> dict[str, str]:
    url = f"{recv_url}/r/{s.name}"
    if s.type == "webhook":
        return {"type": "webhook", "url": url, "secret": "bench-webhook-secret-0123456789"}
    if s.type == "splunk_hec":
        return {"type": "splunk_hec", "url": url, "token": "bench-hec-token-0123456789", "index": "audit"}
    if s.type == "datadog":
        return {"type": "datadog", "url": url, "api_key": "bench-dd-api-key-0123456789", "service": "auditlog"}
    return {"type": "s3", "bucket": S3_BUCKET, "prefix": s.name, "region": "us-east-1",
            "access_key_id": "AKIABENCHSTREAMS0001", "secret_access_key": "bench-secret-access-key-0123456789",
            "endpoint": f"http://127.0.0.1:{s3_port}"}


# ----- the run ----------------------------------------------------------------------------------------------
def phase(a: argparse.Namespace, name: str, url: str, kafka_port: int, topic: str, tmp: Path, run_id: str,
          readers: list[str], cpu: Cpu, hc: httpx.Client, seed: int) -> dict[str, Any]:
    """Produce for ``--seconds`` with the readers (while producing) and the probe on, until the consumer has
    consumed it all; returns the producer's records and figures, the CPU window and the probe still open (the
    caller ends them)."""
    base = int(consumer_status(hc, url).get("consumed", 0))
    out = tmp / f"sent-{name}.json"
    rd = Readers(url, readers, a.read_period)
    probe = Probe(url)
    producer = run_producer(a, kafka_port, topic, f"{run_id}-{name}", out, seed)
    try:
        cpu.add("producer", producer.pid)
        c0 = cpu.snap()
        t0 = time.time()
        rd.start()
        probe.start()
        assert producer.stdout is not None
        line = producer.stdout.readline()
        if not line.startswith("DONE"):
            raise RuntimeError(f"producer: {line!r}")
        c1 = cpu.snap()
        t1 = time.time()
        api = rd.stop()
        producer.wait(60)
        doc = json.loads(out.read_text())
        acked = [r for r in doc["events"] if r["acked"]]
        wait_consumed(hc, url, base, len(doc["events"]))
        time.sleep(0.3)
    except BaseException:
        probe.stop()
        raise
    finally:
        rd.halt()
        stop_proc(producer, 10)
    return {"c0": c0, "c1": c1, "t0": t0, "t1": t1, "api": api, "probe": probe, "doc": doc, "acked": acked}


def create_streams(hc: httpx.Client, url: str, data: Path, plan: Plan, recv_url: str,
                   s3_port: int) -> dict[str, str]:
    """The plan's streams through the API; their ids by name."""
    owners = {org: up_token(data, f"u-bench-owner-{org}", org, (READ, STREAM)) for org in plan.orgs}
    ids: dict[str, str] = {}
    for s in plan.streams:
        body = {"name": s.name, "destination": destination(s, recv_url, s3_port), "filters": s.filters,
                "start": "now"}
        r = hc.post(url + "/v1/streams", json=body, headers={"Authorization": f"Bearer {owners[s.org]}"})
        if r.status_code != 201:
            raise RuntimeError(f"POST /v1/streams {s.name}: {r.status_code} {r.text[:300]}")
        ids[s.name] = r.json()["id"]
    return ids


def streams_now(hc: httpx.Client, url: str, data: Path, plan: Plan) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for org in sorted({s.org for s in plan.streams}):
        tok = up_token(data, f"u-bench-owner-{org}", org, (READ, STREAM))
        out += hc.get(url + "/v1/streams", headers={"Authorization": f"Bearer {tok}"}).json()["data"]
    return out


def main(a: argparse.Namespace) -> dict[str, Any]:
    t_begin = time.monotonic()
    run_id = uuid.uuid4().hex[:12]
    marker = f"{run_id}-B"
    env = {"AUDITLOG_STREAMS_ALLOW_HOSTS": "127.0.0.1", "AUDITLOG_API_RATE_PER_SECOND": "0"}
    for kv in a.env:
        k, _, v = kv.partition("=")
        env[k] = v
    eff = Settings().with_overrides(**{k.removeprefix("AUDITLOG_").lower(): v for k, v in env.items()
                                       if k not in ("AUDITLOG_STREAMS_ALLOW_HOSTS",)})
    settings_used: dict[str, Any] = {k: getattr(eff, k) for k in (
        "streams_batch_max_events", "streams_batch_seconds", "streams_lease_seconds",
        "streams_request_timeout_seconds", "batch_min_seconds", "batch_max_seconds", "topic_partitions",
        "api_query_threads")}
    settings_used["env"] = env
    the_plan = PLANS[a.plan]
    plan = {s.name: s for s in the_plan.streams}
    res: dict[str, Any] = {
        "label": a.label or f"{a.plan}: {a.rate}/s for {a.seconds:g} s", "plan": a.plan, "commit": git_rev(),
        "broker": "durable" if a.durable else "memory (up --ephemeral)",
        "setup": "auditlog up as a subprocess (broker and decode helper its children; consumer, API and the streams' "
                 "deliverer in its one process over embedded chDB); producer, HTTP receiver (webhook, splunk_hec, "
                 "datadog) and s3disk (s3) each a process of their own; 5 /v1/events readers and the /metrics probe "
                 "in the bench's process",
        "load": {"rate_per_s": a.rate, "seconds_per_phase": a.seconds, "burst_ms": 50,
                 "orgs": the_plan.about, "workspaces": "ml-research, inference-prod, data-platform, none (even)",
                 "scopes": "random catalog action (about half service)",
                 "failed_share": 0.1, "readers": a.readers, "read_period_s": a.read_period,
                 "readers_org": the_plan.streams[0].org},
        "streams": [{"name": s.name, "type": s.type, "org": s.org, "filters": s.filters}
                    for s in the_plan.streams],
        "settings": settings_used, "machine_before": machine(), "run_id": run_id,
    }
    port, kafka_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[Any]] = []
    with tempfile.TemporaryDirectory(prefix="auditlog-bench-streams-") as tmp_s:
        tmp = Path(tmp_s)
        data, s3root, recv_file = tmp / "data", tmp / "s3", tmp / "received.bin"
        try:
            receiver, recv_port = start_receiver(recv_file, marker)
            procs.append(receiver)
            s3disk, s3_port = start_s3disk(s3root)
            procs.append(s3disk)
            recv_url = f"http://127.0.0.1:{recv_port}"
            up = start_up(data, port, kafka_port, env, () if a.durable else ("--ephemeral",))
            procs.append(up)
            reader_org = the_plan.streams[0].org
            readers = [up_token(data, f"u-bench-reader-{i}", reader_org) for i in range(a.readers)]
            cpu = Cpu(up.pid, {"receiver": receiver.pid, "s3disk": s3disk.pid, "bench": os.getpid()})
            with httpx.Client(timeout=30) as hc:
                deadline = time.monotonic() + 90
                while not consumer_status(hc, url).get("ready"):
                    assert time.monotonic() < deadline, "consumer not ready within 90 s"
                    time.sleep(0.25)
                time.sleep(2.0)
                # calibration: up idle (the probe on), then the readers alone, for the CPU model of analyse()
                probe = Probe(url).start()
                try:
                    i0 = cpu.snap()
                    time.sleep(a.idle_s)
                    i1 = cpu.snap()
                    rd = Readers(url, readers, a.read_period).start()
                    time.sleep(a.idle_s)
                    i2 = cpu.snap()
                    calib_api = rd.stop()
                finally:
                    probe.stop()
                res["idle"] = cpu_between(i0, i1)
                res["readers_alone"] = {**cpu_between(i1, i2), "api": calib_api}
                print(f"phase A: {a.rate}/s for {a.seconds:g} s, no streams ...", file=sys.stderr)
                pa = phase(a, "A", url, kafka_port, eff.topic, tmp, run_id, readers, cpu, hc, a.seed)
                c_a_end = cpu.snap()
                pa["probe"].stop()
                ids = create_streams(hc, url, data, the_plan, recv_url, s3_port)
                res["stream_ids"] = ids
                deadline = time.monotonic() + 60  # the deliverer takes new streams at its next cycle (lease / 5)
                while set(ids.values()) - set(metric_values(hc.get(url + "/metrics").text,
                                                            "auditlog_stream_lag_seconds")):
                    assert time.monotonic() < deadline, "the deliverer did not take every stream within 60 s"
                    time.sleep(0.25)
                time.sleep(2.0)
                probe = Probe(url).start()  # the streams caught up and idle (nothing produced): their fixed cost
                try:
                    s0 = cpu.snap()
                    time.sleep(a.idle_s)
                    res["streams_idle"] = cpu_between(s0, cpu.snap())
                finally:
                    probe.stop()
                delivered0 = metric_values(hc.get(url + "/metrics").text, "auditlog_stream_delivered_events_total")
                print(f"phase B: {a.rate}/s for {a.seconds:g} s, {len(plan)} streams ...", file=sys.stderr)
                pb = phase(a, "B", url, kafka_port, eff.topic, tmp, run_id, readers, cpu, hc, a.seed + 1)
                try:
                    expected = {n: sum(1 for r in pb["acked"] if s.sees(r)) for n, s in plan.items()}
                    s3c = S3Counter(s3root, marker.encode())
                    t_drain = time.monotonic()
                    last, last_change, said = -1, time.monotonic(), time.monotonic()
                    got: dict[str, int] = {}
                    while True:
                        stats = hc.get(recv_url + "/stats").json()
                        got = {n: (s3c.count(n) if s.type == "s3" else stats.get(n, [0, 0])[1]) for n, s in plan.items()}
                        if all(got[n] >= expected[n] for n in plan):
                            break
                        if sum(got.values()) != last:
                            last, last_change = sum(got.values()), time.monotonic()
                        elif time.monotonic() - last_change > a.drain_s:
                            break
                        if time.monotonic() - said > 10:
                            said = time.monotonic()
                            print(f"draining: {sum(got.values()):,} of {sum(expected.values()):,} received",
                                  file=sys.stderr)
                        time.sleep(0.5)
                    c_b_end = cpu.snap()
                finally:
                    pb["probe"].stop()
                res["drain_s"] = round(time.monotonic() - t_drain, 2)
                time.sleep(2.0)  # a moment for repeats
                text = hc.get(url + "/metrics").text
                delivered1 = metric_values(text, "auditlog_stream_delivered_events_total")
                failures = metric_values(text, "auditlog_stream_failures_total")
                res["streams_after"] = [{k: s.get(k) for k in ("name", "state", "delivered", "lag_seconds",
                                                                "last_error")} for s in streams_now(hc, url, data, the_plan)]
        finally:
            for p in reversed(procs):  # up first (its deliverer finishes its batches), then the receivers
                stop_proc(p, 30)
        http = read_http(recv_file, plan, marker.encode())
        s3 = read_s3(s3root, plan, marker.encode())
    arrivals = {**http, **s3}
    res.update(analyse(plan, pa, pb, c_a_end, c_b_end, res["idle"], res["readers_alone"], res["streams_idle"],
                       expected, arrivals, ids, delivered0, delivered1, failures))
    res["machine_after"] = machine()
    res["seconds_total"] = round(time.monotonic() - t_begin, 1)
    return res


def analyse(plan: dict[str, Spec], pa: dict[str, Any], pb: dict[str, Any], c_a_end: dict[str, Any],
            c_b_end: dict[str, Any], idle: dict[str, Any], calib: dict[str, Any], streams_idle: dict[str, Any],
            expected: dict[str, int],
            arrivals: dict[str, Arrivals], ids: dict[str, str], delivered0: dict[str, float],
            delivered1: dict[str, float], failures: dict[str, float]) -> dict[str, Any]:
    sent = {r["id"]: r["sent_at"] for r in pb["acked"]}
    t0, t1 = pb["t0"], pb["t1"]
    per: list[dict[str, Any]] = []
    all_lat: list[float] = []
    to_fetch: list[float] = []
    fetch_to_recv: list[float] = []
    total_received = total_dup = total_missing = total_unexpected = 0
    for name, s in plan.items():
        arr = arrivals.get(name, Arrivals())
        exp_ids = {r["id"] for r in pb["acked"] if s.sees(r)}
        lat = [min(ts) - sent[e] for e, ts in arr.events.items() if e in sent]
        all_lat += lat
        for e, ts in arr.events.items():
            if e in sent and e in arr.received_at:
                to_fetch.append(arr.received_at[e] - sent[e])
                fetch_to_recv.append(min(ts) - arr.received_at[e])
        received = sum(1 for e in arr.events if e in exp_ids)
        dups = sum(len(ts) - 1 for ts in arr.events.values())
        in_window = sum(1 for ts in arr.events.values() if t0 <= min(ts) <= t1)
        times = sorted(min(ts) for ts in arr.events.values())
        reqs = [r for r in arr.requests if r[1]]
        gaps = [b[0] - x[0] for x, b in itertools.pairwise(reqs)]
        sid = ids.get(name, "")
        row = {"name": name, "type": s.type, "org": s.org, "filters": s.filters, "expected": len(exp_ids),
               "received": received, "missing": len(exp_ids - set(arr.events)), "duplicates": dups,
               "unexpected": sum(1 for e in arr.events if e not in exp_ids), "other_events": arr.other,
               "demand_per_s": round(len(exp_ids) / (t1 - t0)),
               "delivered_per_s_while_producing": round(in_window / (t1 - t0)),
               "delivered_per_s_first_to_last": round(len(times) / (times[-1] - times[0]))
               if len(times) > 1 and times[-1] > times[0] else None,
               "requests": len(reqs), "events_per_request": round(sum(r[1] for r in reqs) / len(reqs), 1)
               if reqs else None, "request_gap_p50_ms": round(percentile(gaps, 50) * 1000) if gaps else None,
               "server_delivered": int(delivered1.get(sid, 0) - delivered0.get(sid, 0)),
               "server_failures": int(failures.get(sid, 0)), **latency_ms(lat), "_gaps": gaps}
        per.append(row)
        total_received += received
        total_dup += dups
        total_missing += row["missing"]
        total_unexpected += row["unexpected"]
    stored_at = stored_estimate(pb)
    stored_lat = [t - sent[e] for e, t in stored_at.items()]
    stored_to_recv = [min(ts) - stored_at[e] for arr in arrivals.values() for e, ts in arr.events.items()
                      if e in stored_at]
    gaps_all = [g for r in per for g in r.pop("_gaps")]
    stored_a = stored_estimate(pa)
    t_first = min(sent.values())
    by_slice: dict[int, list[float]] = {}
    stored_by_slice: dict[int, list[float]] = {}
    for arr in arrivals.values():
        for e, ts in arr.events.items():
            if e in sent:
                by_slice.setdefault(int((sent[e] - t_first) // 10), []).append(min(ts) - sent[e])
    for e, t in stored_at.items():
        stored_by_slice.setdefault(int((sent[e] - t_first) // 10), []).append(t - sent[e])
    slices = {f"{k * 10}-{k * 10 + 10}s": {"received_p95_ms": round(percentile(v, 95) * 1000),
                                            "stored_est_p95_ms": round(percentile(stored_by_slice.get(k, []), 95)
                                                                       * 1000) if stored_by_slice.get(k) else None}
              for k, v in sorted(by_slice.items())}
    sent_a = {r["id"]: r["sent_at"] for r in pa["acked"]}
    cpu_a = cpu_between(pa["c0"], c_a_end)
    cpu_b = cpu_between(pb["c0"], c_b_end)
    win_a = cpu_between(pa["c0"], pa["c1"])
    win_b = cpu_between(pb["c0"], pb["c1"])
    n_a, n_b = len(pa["acked"]), len(pb["acked"])
    deliveries = total_received + total_dup
    # up's CPU = idle rate x wall + per reader call x calls + per ingested event x events + per delivery x deliveries
    idle_rate = idle["up_total_s"] / idle["wall_s"]
    per_call = max(0.0, (calib["up_total_s"] - idle_rate * calib["wall_s"]) / max(1, calib["api"]["requests"]))
    req_a, req_b = pa["api"]["requests"], pb["api"]["requests"]
    per_ingest = (cpu_a["up_total_s"] - idle_rate * cpu_a["wall_s"] - per_call * req_a) / max(1, n_a)
    streams_cpu = cpu_b["up_total_s"] - idle_rate * cpu_b["wall_s"] - per_call * req_b - per_ingest * n_b
    fixed = max(0.0, streams_idle["up_total_s"] / streams_idle["wall_s"] - idle_rate)  # cores of idle streams
    per_delivery = (streams_cpu - fixed * cpu_b["wall_s"]) / max(1, deliveries)
    steady_cores = ((win_b["up_total_s"] - per_call * req_b) / win_b["wall_s"]
                    - (win_a["up_total_s"] - per_call * req_a) / win_a["wall_s"])
    in_window_total = sum(r["delivered_per_s_while_producing"] for r in per)
    return {
        "events": {"phase_A": {"sent": len(pa["doc"]["events"]), "acked": n_a,
                               "rate_achieved": round(n_a / pa["doc"]["produce_s"]),
                               "burst_late_p99_ms": pa["doc"]["late_p99_ms"]},
                   "phase_B": {"sent": len(pb["doc"]["events"]), "acked": n_b,
                               "rate_achieved": round(n_b / pb["doc"]["produce_s"]),
                               "burst_late_p99_ms": pb["doc"]["late_p99_ms"]}},
        "latency": latency_ms(all_lat),
        "latency_by_10s_of_sending": slices,
        "per_stream": per,
        "delivery": {"expected": sum(expected.values()), "received": total_received, "missing": total_missing,
                     "duplicates": total_dup, "unexpected": total_unexpected,
                     "delivered_per_s_while_producing": in_window_total,
                     "demand_per_s": round(sum(expected.values()) / (t1 - t0))},
        "ingest_phase_A_produce_to_stored_estimate": latency_ms([t - sent_a[e] for e, t in stored_a.items()]),
        "breakdown": {"produce_to_fetched": latency_ms(to_fetch), "produce_to_stored_estimate": latency_ms(stored_lat),
                      "fetched_to_received": latency_ms(fetch_to_recv),
                      "stored_estimate_to_received": latency_ms(stored_to_recv),
                      "deliverer_request_gap": latency_ms(gaps_all),
                      "note": "fetched = the event's received_at (the consumer fetched it from the broker); stored = "
                              "the consumer's stored count (probe every 100 ms) reached the event's place in send "
                              "order; received = the receiver's clock; the rest of produce -> received after "
                              "stored is the deliverer: its poll (streams_batch_seconds when caught up), its read, "
                              "the send; deliverer_request_gap: time between two requests (objects) of a stream "
                              "with events, i.e. its cycle: the pause of streams_batch_seconds after a read that "
                              "left nothing + read + send + saving the position"},
        "api_events_p95": {"phase_A_no_streams": pa["api"], "phase_B_10_streams": pb["api"]},
        "cpu": {"idle": idle, "readers_alone": calib, "streams_idle": streams_idle, "phase_A": cpu_a, "phase_B": cpu_b, "phase_A_produce_window": win_a,
                "phase_B_produce_window": win_b,
                "model_us": {"idle_cores": round(idle_rate, 3), "per_reader_call": round(per_call * 1e6),
                             "per_ingested_event": round(per_ingest * 1e6, 1)},
                "streams_cpu_s": round(streams_cpu, 2), "deliveries": deliveries,
                "streams_us_per_delivered_event": round(streams_cpu / max(1, deliveries) * 1e6, 1),
                "streams_idle_cores": round(fixed, 3),
                "streams_idle_cores_per_stream": round(fixed / len(plan), 4),
                "streams_us_per_delivered_event_beyond_idle": round(per_delivery * 1e6, 1),
                "streams_cores_while_producing": round(steady_cores, 3),
                "streams_us_per_event_while_producing": round(steady_cores / max(1, in_window_total) * 1e6, 1),
                "note": "up = its process + its children (broker, decode helper). Model of up's CPU: idle rate (the "
                        "probe on) x wall + per reader call (calibrated with the readers alone) x calls + per "
                        "ingested event (phase A: produce start -> consumer caught up) x events + the streams; "
                        "streams_cpu_s = phase B's CPU (produce start -> every stream drained) less the rest of the "
                        "model; while producing: the same over the two produce windows (up's mean cores less the "
                        "readers' calls), over the events delivered in B's window; streams_idle_cores: up's CPU "
                        "with the streams caught up and nothing produced, less its idle rate without streams (their "
                        "polling: a read every streams_batch_seconds each, the lease renewals); "
                        "beyond_idle: (streams_cpu_s - streams_idle_cores x B's wall) per delivery"},
    }


def report(r: dict[str, Any], path: Path) -> None:
    ev = r["events"]
    print(f"\nlog streams ({r['plan']}): {len(r['streams'])} streams, {ev['phase_B']['rate_achieved']} ev/s for "
          f"{r['load']['seconds_per_phase']:g} s per phase ({r['label']}; broker {r['broker']}; batch "
          f"{r['settings']['streams_batch_max_events']} events / {r['settings']['streams_batch_seconds']} s)")
    print(f"{'stream':<19}{'type':<11}{'expected':>9}{'recv':>8}{'miss':>6}{'dup':>5}{'demand/s':>9}"
          f"{'deliv/s':>8}{'ev/req':>7}{'p50 ms':>8}{'p95 ms':>8}{'max ms':>8}")
    for s in r["per_stream"]:
        print(f"{s['name']:<19}{s['type']:<11}{s['expected']:>9}{s['received']:>8}{s['missing']:>6}"
              f"{s['duplicates']:>5}{s['demand_per_s']:>9}{s['delivered_per_s_while_producing']:>8}"
              f"{s['events_per_request'] or 0:>7}{s.get('p50_ms', '-'):>8}{s.get('p95_ms', '-'):>8}"
              f"{s.get('max_ms', '-'):>8}")
    lat, d = r["latency"], r["delivery"]
    print(f"{'all':<30}{d['expected']:>9}{d['received']:>8}{d['missing']:>6}{d['duplicates']:>5}"
          f"{d['demand_per_s']:>9}{d['delivered_per_s_while_producing']:>8}{'':>7}{lat.get('p50_ms', '-'):>8}"
          f"{lat.get('p95_ms', '-'):>8}{lat.get('max_ms', '-'):>8}")
    b = r["breakdown"]
    print("breakdown p50/p95 ms: produce->fetched " + "/".join(str(b['produce_to_fetched'].get(k)) for k in
                                                                ("p50_ms", "p95_ms"))
          + ", produce->stored (est.) " + "/".join(str(b['produce_to_stored_estimate'].get(k)) for k in
                                                   ("p50_ms", "p95_ms"))
          + ", fetched->received " + "/".join(str(b['fetched_to_received'].get(k)) for k in ("p50_ms", "p95_ms"))
          + ", stored (est.)->received " + "/".join(str(b['stored_estimate_to_received'].get(k))
                                                    for k in ("p50_ms", "p95_ms"))
          + f"; a stream's cycle (request to request) p50 {b['deliverer_request_gap'].get('p50_ms')} ms")
    print("p95 ms by 10 s of sending (received / stored est.): " + ", ".join(
        f"{k} {v['received_p95_ms']}/{v['stored_est_p95_ms']}" for k, v in r["latency_by_10s_of_sending"].items()))
    ia = r["ingest_phase_A_produce_to_stored_estimate"]
    print(f"phase A (no streams) produce->stored (est.) p50/p95 {ia.get('p50_ms')}/{ia.get('p95_ms')} ms")
    c = r["cpu"]
    print(f"machine busy % (100 = one core) in the produce windows: A {c['phase_A_produce_window']['host_busy_pct']} "
          f"(not ours {c['phase_A_produce_window']['others_on_host_pct']}), B "
          f"{c['phase_B_produce_window']['host_busy_pct']} (not ours {c['phase_B_produce_window']['others_on_host_pct']})")
    m = c["model_us"]
    print(f"CPU model of up: idle {m['idle_cores']} cores, {m['per_reader_call']} us per reader call, "
          f"{m['per_ingested_event']} us per ingested event")
    print(f"CPU of up (+children): phase A {c['phase_A']['up_total_s']} s over {c['phase_A']['wall_s']} s, "
          f"phase B {c['phase_B']['up_total_s']} s over {c['phase_B']['wall_s']} s; streams {c['streams_cpu_s']} s "
          f"for {c['deliveries']} deliveries = {c['streams_us_per_delivered_event']} us/event (while producing: "
          f"{c['streams_cores_while_producing']} cores, {c['streams_us_per_event_while_producing']} us/event)")
    print(f"streams caught up and idle: {c['streams_idle_cores']} cores ({c['streams_idle_cores_per_stream']} per "
          f"stream); per delivery beyond that: {c['streams_us_per_delivered_event_beyond_idle']} us")
    print("up threads % in B's produce window: " + ", ".join(f"{k} {v}" for k, v in
                                                             c["phase_B_produce_window"]["up_threads_pct"].items()))
    api = r["api_events_p95"]
    print(f"/v1/events?limit=50: no streams p50/p95 {api['phase_A_no_streams'].get('p50_ms')}/"
          f"{api['phase_A_no_streams'].get('p95_ms')} ms ({api['phase_A_no_streams']['requests']} calls), "
          f"10 streams {api['phase_B_10_streams'].get('p50_ms')}/{api['phase_B_10_streams'].get('p95_ms')} ms "
          f"({api['phase_B_10_streams']['requests']} calls)")
    print(f"load average {r['machine_before']['loadavg_1m']} -> {r['machine_after']['loadavg_1m']}; "
          f"{r['seconds_total']} s; written {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", choices=sorted(PLANS), default="tenants",
                    help="orgs and streams: " + "; ".join(f"{k}: {v.about}" for k, v in PLANS.items()).replace("%", "%%") + " [tenants]")
    ap.add_argument("--rate", type=int, default=5000, help="events/s [5000]")
    ap.add_argument("--seconds", type=float, default=60.0, help="produce for this long in each phase [60]")
    ap.add_argument("--readers", type=int, default=5, help="/v1/events?limit=50 callers [5]")
    ap.add_argument("--read-period", type=float, default=0.5, help="a reader calls every this many s [0.5]")
    ap.add_argument("--drain-s", type=float, default=30.0, help="give up when nothing arrives for this long [30]")
    ap.add_argument("--idle-s", type=float, default=10.0,
                    help="up idle, then the readers alone, are measured this long each first [10]")
    ap.add_argument("--durable", action="store_true", help="up's durable broker (default: --ephemeral, memory)")
    ap.add_argument("--env", action="append", default=[], help="more AUDITLOG_X=value for up (repeatable)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--label", default=None)
    ap.add_argument("--no-write", action="store_true", help="print only; bench/results/streams.json unchanged")
    ap.add_argument("--json", default=None, help="also write the run's JSON to this file")
    ap.add_argument("--produce", action="store_true", help=argparse.SUPPRESS)  # internal: the producer process
    ap.add_argument("--receive", action="store_true", help=argparse.SUPPRESS)  # internal: the HTTP receiver
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    ap.add_argument("--tag", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--marker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.produce:
        asyncio.run(produce(args))
        sys.exit(0)
    if args.receive:
        asyncio.run(receive(args))
        sys.exit(0)
    result = main(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.no_write:
        report(result, Path("(not written)"))
    else:
        path = ROOT / "bench" / "results" / "streams.json"
        runs = json.loads(path.read_text())["runs"] if path.exists() else []
        report(result, write_result("streams", {"runs": [*runs, result][-20:]}))
