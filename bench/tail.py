"""Live tail delivery latency: produce -> SSE receipt at ``--rate`` events/s with ``--streams`` concurrent streams.

Setup (the server's work, the producer's and the clients' never share a GIL):
- ``auditlog up`` (a subprocess, fresh data directory, free loopback ports): the Tansu broker (its child), the
  consumer (with its decode helper) and the API in one process over one embedded chDB store: the deployment the
  embedded store allows (chDB is one engine per process, so API and consumer cannot be split here). The bench
  waits for the consumer to have joined its group before anything is published;
- a producer process (this file with ``--produce``): ``auditlogkit.producer.AuditProducer`` publishing ``--rate``
  events/s for ``--seconds`` in bursts every ``--burst-ms``, each event valid (``schemas/event.py``), occurred_at
  now, carrying its send time in ``detail`` (``{"bench": run, "sent_at": time.time(), "seq": n}``); it writes
  every event it sent (id, org, workspace, status, send time, ack) to a file;
- ``--client-procs`` client processes sharing the ``--streams`` SSE streams round robin (one
  ``tests/integration/sse_client.py`` ``SseClient`` thread per stream; ``at`` = the time the event's chunk was
  read), each stream a
  caller of its own (tokens minted with ``up``'s JWT secret), scopes mixed: org owners of acme (all of acme),
  workspace admins of acme (2 of its 3 workspaces), org owners of acme with ``status=FAILED``, org owners of
  globex. A stream the server ends (overrun: ``api_tail_backlog_events`` behind) resumes with ``Last-Event-ID``
  after ``--resume-delay`` s, as the page does;
- this process: a probe reading ``/metrics`` every ``--probe-ms`` (the consumer's stored-events counter: when each
  event was stored, to within the probe's period), the CPU sampler, the analysis.

Figures: latency = receipt time - send time per (stream, event), events sent in the first ``--warmup`` seconds
left out: p50/p95/p99/max overall, per kind of stream and per second of sending; the same for "stored"
(estimated from the probe: the n-th event sent is taken as stored when the consumer's stored count first reached
n), for the first receipt of each event among its streams, and the spread first -> last receipt of an event
among its streams (fan-out). Delivery: per stream, events expected (its scope's share of what the producer had
acknowledged) vs received, missing, duplicated, unexpected (outside its scope), resumes. CPU% (100 = one core,
psutil) over the produce window of the ``up`` process (API + consumer + chDB threads; per thread name too), its
decode helper(s), the broker, the client processes, this process and the producer. Consumer flushes and tail
polls from ``/metrics``. Prints a table; appends the run to bench/results/tail.json (machine info and commit).
One run takes about a minute.

    .venv/bin/python bench/tail.py [--streams 50] [--rate 1000] [--seconds 30] [--poll 1.0] [--label x]
    .venv/bin/python bench/tail.py --mix owner=2,ws_admin=10,owner_failed=28,globex_owner=10   # lighter fan-out
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
import psutil
from common import ROOT, cpu_seconds_of, latency_ms, machine, percentile, stop_proc, thread_cpu, write_result

from auditlogkit.query_api.security.auth import mint_token
from auditlogkit.server.broker import free_port
from auditlogkit.server.settings import Settings

ACME_WS = ("ml-research", "inference-prod", "data-platform")
GLOBEX_WS = ("vision", "nlp")
ADMIN_WS = ("ml-research", "inference-prod")
# kind -> (share of the streams, token claims, query params, which events it may see)
KINDS: dict[str, dict[str, Any]] = {
    "owner": {"share": 0.36, "org": "acme", "role": "org_owner", "params": {},
              "sees": lambda r: r["org"] == "acme"},
    "ws_admin": {"share": 0.36, "org": "acme", "role": "workspace_admin", "workspaces": list(ADMIN_WS), "params": {},
                 "sees": lambda r: r["org"] == "acme" and r["ws"] in ADMIN_WS},
    "owner_failed": {"share": 0.18, "org": "acme", "role": "org_owner", "params": {"status": "FAILED"},
                     "sees": lambda r: r["org"] == "acme" and r["status"] == "FAILED"},
    "globex_owner": {"share": 0.10, "org": "globex", "role": "org_owner", "params": {},
                     "sees": lambda r: r["org"] == "globex"},
}


# ----- the producer process ---------------------------------------------------------------------------------
async def produce(a: argparse.Namespace) -> None:
    from auditlogkit.producer import AuditProducer
    from auditlogkit.schemas.catalog import get_catalog
    from tests.factories import make_event

    rng = random.Random(a.seed)
    actions = [t for t in get_catalog().all_actions() if t[1] != "audit_log"]
    per_burst = max(1, round(a.rate * a.burst_ms / 1000))
    bursts = max(1, round(a.seconds * 1000 / a.burst_ms))
    recs: list[dict[str, Any]] = []
    futs: list[Any] = []
    late: list[float] = []
    async with AuditProducer(a.bootstrap, a.topic) as p:
        await p.reachable()
        print("START", flush=True)
        t0 = time.monotonic()
        for b in range(bursts):
            due = t0 + b * a.burst_ms / 1000
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            late.append(time.monotonic() - due)
            for _ in range(per_burst):
                org = "acme" if rng.random() < 0.9 else "globex"
                ws = rng.choice([*(ACME_WS if org == "acme" else GLOBEX_WS), None])
                status = "FAILED" if rng.random() < 0.1 else "SUCCESS"
                scope, category, action = rng.choice(actions)
                n = len(recs)
                eid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                sent = time.time()
                ev = make_event(event_id=eid, org_id=org, workspace_id=ws, status=status, scope=scope,
                                category=category, action=action,
                                occurred_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                                actor={"id": f"u-{n % 40}", "email": f"user{n % 40}@{org}.example"},
                                target={"type": category, "id": f"{category}-{n}", "name": f"{category}-{n}"},
                                description=f"bench tail event {n}",
                                detail={"bench": a.run_id, "sent_at": sent, "seq": n})
                futs.append(await p.send(ev))
                recs.append({"id": eid, "org": org, "ws": ws, "status": status, "sent_at": sent})
        produce_s = time.monotonic() - t0
        acks = await asyncio.gather(*futs, return_exceptions=True)
    for r, ack in zip(recs, acks, strict=True):
        r["acked"] = not isinstance(ack, BaseException)
    Path(a.out).write_text(json.dumps({"events": recs, "produce_s": produce_s, "burst_size": per_burst,
                                       "bursts": bursts, "burst_late_p99_ms": round(percentile(late, 99) * 1000, 1),
                                       "burst_late_max_ms": round(max(late) * 1000, 1)}))
    print("DONE", flush=True)


# ----- the server -------------------------------------------------------------------------------------------
def start_up(data: Path, port: int, kafka_port: int, env_over: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUDITLOG_LOG_LEVEL": "warning", **env_over}
    proc = subprocess.Popen([sys.executable, "-m", "auditlogkit.server.app.cli", "up", "--port", str(port), "--kafka-port",
                             str(kafka_port), "--data", str(data)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    out: list[str] = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith("READY"):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return proc
    raise RuntimeError("auditlog up exited before READY:\n" + "".join(out))





def metric_sums(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Sum over labels of each metric in ``names`` (Prometheus text format)."""
    out = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


METRICS = ("auditlog_consumer_events_stored_total", "auditlog_consumer_flush_seconds_sum",
           "auditlog_consumer_flush_seconds_count", "auditlog_consumer_batch_messages_sum",
           "auditlog_consumer_batch_messages_count", "auditlog_consumer_commits_total",
           "auditlog_api_tail_polls_total", "auditlog_api_tail_events_total", "auditlog_api_tail_streams")


# ----- CPU --------------------------------------------------------------------------------------------------
class CpuWatch:
    """CPU seconds of the processes of the run, sampled every second (and at start/stop of the window)."""

    def __init__(self, up_pid: int, producer_pid: int, client_pids: list[int]) -> None:
        up = psutil.Process(up_pid)
        self.procs: dict[str, list[psutil.Process]] = {
            "up_process": [up], "decode_helpers": [], "broker": [],
            "sse_clients": [psutil.Process(p) for p in client_pids], "bench_main": [psutil.Process()],
            "producer": [psutil.Process(producer_pid)]}
        for ch in up.children(recursive=True):
            with_name = ch.name().lower() + " ".join(ch.cmdline()).lower()
            self.procs["broker" if "tansu" in with_name else "decode_helpers"].append(ch)
        self.up_pid = up_pid
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.stop_ev = threading.Event()
        self.threads0: dict[str, float] = {}
        self.threads1: dict[str, float] = {}

    def snap(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, procs in self.procs.items():
            total = 0.0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += cpu_seconds_of(p)
            out[kind] = total
        return out

    def start(self) -> None:
        self.threads0 = thread_cpu(self.up_pid)
        self.samples.append((time.monotonic(), self.snap()))

        def loop() -> None:
            while not self.stop_ev.wait(1.0):
                self.samples.append((time.monotonic(), self.snap()))

        threading.Thread(target=loop, daemon=True).start()

    def stop(self) -> dict[str, Any]:
        self.stop_ev.set()
        self.samples.append((time.monotonic(), self.snap()))
        self.threads1 = thread_cpu(self.up_pid)
        (t0, a), (t1, b) = self.samples[0], self.samples[-1]
        wall = t1 - t0
        mean = {k: round((b[k] - a[k]) / wall * 100, 1) for k in a}
        peak: dict[str, float] = {}
        for (ta, sa), (tb, sb) in zip(self.samples, self.samples[1:], strict=False):
            if tb - ta < 0.5:
                continue
            for k in sa:
                peak[k] = max(peak.get(k, 0.0), round((sb[k] - sa[k]) / (tb - ta) * 100, 1))
        threads = {k: round((self.threads1.get(k, 0.0) - self.threads0.get(k, 0.0)) / wall * 100, 1)
                   for k in self.threads1}
        top = dict(sorted(((k, v) for k, v in threads.items() if v >= 0.5), key=lambda kv: -kv[1])[:12])
        host = {"machine_total": round(sum(mean.values()), 1)}
        return {"window_s": round(wall, 1), "mean_pct": {**mean, **host}, "peak_1s_pct": peak,
                "up_process_threads_pct": top, "pids": {k: [p.pid for p in v] for k, v in self.procs.items()}}


# ----- the client -------------------------------------------------------------------------------------------
def stream_plan(n: int, mix: str | None) -> list[str]:
    """``n`` streams in the default shares, or ``mix`` (``kind=count,...``; its total wins over ``n``)."""
    if mix:
        counts = {k: int(v) for k, _, v in (item.partition("=") for item in mix.split(","))}
        if unknown := set(counts) - set(KINDS):
            raise SystemExit(f"--mix: unknown kind(s) {sorted(unknown)} (known: {', '.join(KINDS)})")
    else:
        counts = {k: round(v["share"] * n) for k, v in KINDS.items()}
        counts["owner"] += n - sum(counts.values())
    return [k for k, c in counts.items() for _ in range(c)]


def mint(secret: str, kind: str, i: int) -> str:
    k = KINDS[kind]
    sub = f"u-bench-{kind}-{i}"
    return mint_token(secret, sub=sub, email=f"{sub}@{k['org']}.example", org_id=k["org"], role=k["role"],
                      workspaces=k.get("workspaces"), permissions=("audit:read",), ttl_seconds=3600)


class Stream:
    """One viewer's live tail: an ``SseClient``, and when the server ends it (an overrun: it fell
    ``api_tail_backlog_events`` behind) a new one resuming with ``Last-Event-ID`` after ``resume_delay`` s, as the
    page and EventSource do."""

    def __init__(self, kind: str, url: str, token: str, resume_delay: float) -> None:
        from tests.integration.sse_client import SseClient

        self._client = SseClient
        self.kind, self.url, self.token, self.resume_delay = kind, url, token, resume_delay
        self.params = dict(KINDS[kind]["params"])
        self.segments = [self._client(url, token, params=dict(self.params)).start()]
        self.resumes: list[float] = []  # time.time() of each resume
        self.lost_position = 0  # resumes without an id (nothing received yet): not exact any more
        self._ended_at: float | None = None
        self._seen: list[int] = [0]
        self.counted = 0

    def wait_live(self) -> None:
        self.segments[-1].wait_live(30)

    def maybe_resume(self) -> None:
        cur = self.segments[-1]
        if not cur.ended.is_set():
            return
        now = time.monotonic()
        if self._ended_at is None:
            self._ended_at = now
        if now - self._ended_at < self.resume_delay:
            return
        last = next((seg.events[-1].id for seg in reversed(self.segments) if seg.events), None)
        self.lost_position += last is None
        self.resumes.append(time.time())
        self.segments.append(self._client(self.url, self.token, params=dict(self.params), last_event_id=last).start())
        self._seen.append(0)
        self._ended_at = None

    def count_new(self, wanted: set[str]) -> int:
        """Events of ``wanted`` received (counted incrementally: the client's process stays light)."""
        for j, seg in enumerate(self.segments):
            upto = len(seg.events)
            self.counted += sum(1 for e in seg.events[self._seen[j]:upto] if e.data.get("event_id") in wanted)
            self._seen[j] = upto
        return self.counted

    @property
    def events(self) -> list[Any]:
        return [e for seg in self.segments for e in seg.events]

    def stop(self) -> None:
        for seg in self.segments:
            seg.stop()

    def result(self, run_id: str, ended: bool) -> dict[str, Any]:
        """What the bench needs of this stream (compact: it crosses a pipe): the bench's events received, in
        order, as (event_id, receipt time, sent_at carried in detail)."""
        got: list[tuple[str, float, float]] = []
        other = 0
        for e in self.events:
            d = e.data.get("detail") or {}
            if d.get("bench") == run_id:
                got.append((str(e.data.get("event_id")), e.at, float(d.get("sent_at", 0.0))))
            else:
                other += 1  # audit_log.tail events of the streams opening, etc.
        return {"kind": self.kind, "events": got, "other": other, "resumes": self.resumes,
                "lost_position": self.lost_position, "ended": ended,
                "errors": [seg.error for seg in self.segments if seg.error][:3],
                "statuses": sorted({seg.status for seg in self.segments if seg.status is not None})}


def client_worker(conn: Any, url: str, specs: list[tuple[str, str]], resume_delay: float, gc_off: bool,
                  run_id: str) -> None:
    """A client process: its share of the streams (one SseClient thread each). Protocol over ``conn``: sends
    ``live``; receives ``expect`` (kind -> event ids) and sends ``drained`` once each stream has its events (or
    nothing arrived for ``drain_s``); receives ``stop`` and sends ``result`` (per stream)."""
    if gc_off:
        gc.disable()  # the client holds every event it received; nothing it makes is cyclic
    streams: list[Stream] = []
    try:
        streams = [Stream(kind, url, token, resume_delay) for kind, token in specs]
        for st in streams:
            st.wait_live()
    except Exception as exc:
        conn.send(("error", repr(exc)))
        for st in streams:
            st.stop()
        return
    stop = threading.Event()

    def resumer() -> None:
        while not stop.wait(0.1):
            for st in streams:
                st.maybe_resume()

    threading.Thread(target=resumer, daemon=True).start()
    conn.send(("live",))
    msg = conn.recv()
    if msg[0] == "expect":
        expected, drain_s = msg[1], msg[2]
        last_total, last_change = -1, time.monotonic()
        while True:
            counts = [st.count_new(expected[st.kind]) for st in streams]
            if all(n >= len(expected[st.kind]) for n, st in zip(counts, streams, strict=True)):
                break
            if sum(counts) != last_total:
                last_total, last_change = sum(counts), time.monotonic()
            elif time.monotonic() - last_change > drain_s:
                break
            time.sleep(0.25)
        conn.send(("drained",))
        msg = conn.recv()
    stop.set()
    ended = [st.segments[-1].ended.is_set() for st in streams]  # ended by the server and not resumed
    for st in streams:
        st.stop()
    conn.send(("result", [st.result(run_id, e) for st, e in zip(streams, ended, strict=True)]))


def recv(conn: Any, want: str, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"client process: no {want!r} within {timeout:.0f} s")
    msg = conn.recv()
    if msg[0] != want:
        raise RuntimeError(f"client process: {msg!r} instead of {want!r}")
    return msg


class Probe:
    """``/metrics`` every ``period`` s: (time of the read, consumer's stored-events count)."""

    def __init__(self, url: str, period: float) -> None:
        self.url, self.period = url, period
        self.samples: list[tuple[float, float]] = []
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def read(self, c: httpx.Client) -> dict[str, float]:
        return metric_sums(c.get(self.url + "/metrics").text, METRICS)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self.stop_ev.is_set():
                t0 = time.time()
                try:
                    v = self.read(c)["auditlog_consumer_events_stored_total"]
                except httpx.HTTPError:
                    continue
                self.samples.append(((t0 + time.time()) / 2, v))
                self.stop_ev.wait(max(0.0, self.period - (time.time() - t0)))


def main(a: argparse.Namespace) -> dict[str, Any]:
    t_begin = time.monotonic()
    run_id = uuid.uuid4().hex[:12]
    env_over = {"AUDITLOG_API_TAIL_POLL_SECONDS": str(a.poll)} if a.poll is not None else {}
    for kv in a.env:
        k, _, v = kv.partition("=")
        env_over[k] = v
    eff = Settings().with_overrides(**{k.removeprefix("AUDITLOG_").lower(): v for k, v in env_over.items()})
    settings_used = {k: getattr(eff, k) for k in (
        "api_tail_poll_seconds", "api_tail_heartbeat_seconds", "api_tail_backlog_events", "batch_max_seconds",
        "batch_min_seconds", "batch_max_rows", "consumer_max_poll_records", "topic_partitions", "topic",
        "api_query_threads", "api_rate_per_second")}
    settings_used["consumer_decode_processes_in_up"] = (eff.consumer_decode_processes
                                                        if eff.consumer_decode_processes >= 0
                                                        else max(1, eff.decode_processes()))
    settings_used["consumer_nice_in_up"] = max(10, eff.consumer_nice)
    settings_used["env_overrides"] = env_over
    port, kafka_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    plan = stream_plan(a.streams, a.mix)
    out: dict[str, Any] = {
        "label": a.label or f"poll {settings_used['api_tail_poll_seconds']}s", "commit": commit(),
        "setup": "auditlog up as a subprocess (Tansu broker its child; consumer + API + embedded chDB in one "
                 "process, decode helper beside it); the producer a process of its own; the SSE clients in "
                 "--client-procs processes of their own (one thread per stream); the /metrics probe in the bench's "
                 "main process",
        "load": {"rate_per_s": a.rate, "seconds": a.seconds, "burst_ms": a.burst_ms, "warmup_s": a.warmup,
                 "orgs": "acme 90% (workspaces ml-research, inference-prod, data-platform, none), globex 10%",
                 "failed_share": 0.1},
        "streams": {"total": len(plan), **Counter(plan)},
        "client": {"processes": a.client_procs, "gc_disabled": not a.gc, "resume_delay_s": a.resume_delay, "probe_ms": a.probe_ms,
                   "sse_client": "tests/integration/sse_client.py SseClient, one thread per stream, resumed with "
                                 "Last-Event-ID when the server ends the stream"}, "settings": settings_used, "machine_before": machine(),
        "run_id": run_id,
    }
    with tempfile.TemporaryDirectory(prefix="auditlog-bench-tail-") as tmp:
        data = Path(tmp) / "data"
        proc = start_up(data, port, kafka_port, env_over)
        producer: subprocess.Popen[str] | None = None
        workers: list[tuple[Any, Any]] = []
        try:
            secret = (data / "jwt-secret").read_text().strip()
            t_open = time.monotonic()
            ctx = mp.get_context("spawn")
            n_procs = max(1, min(a.client_procs, len(plan)))
            for w in range(n_procs):  # round robin: each process gets its share of every kind
                specs = [(kind, mint(secret, kind, i)) for i, kind in enumerate(plan) if i % n_procs == w]
                parent, child = ctx.Pipe()
                wp = ctx.Process(target=client_worker, args=(child, url, specs, a.resume_delay, not a.gc, run_id),
                                 daemon=True)
                wp.start()
                workers.append((wp, parent))
            for _, conn in workers:
                recv(conn, "live", 90)
            out["streams_open_s"] = round(time.monotonic() - t_open, 2)
            probe = Probe(url, a.probe_ms / 1000)
            with httpx.Client(timeout=10) as hc:
                deadline = time.monotonic() + 90  # the consumer joins its group some seconds after READY
                while not hc.get(url + "/readyz").json().get("consumer", {}).get("ready"):
                    assert time.monotonic() < deadline, "consumer not ready within 90 s"
                    time.sleep(0.25)
                stored = -1.0
                while (now := probe.read(hc)["auditlog_consumer_events_stored_total"]) != stored:  # audits in
                    stored = now
                    time.sleep(1.5)
                m0 = probe.read(hc)
                m0["t"] = time.monotonic()
            if a.probe_ms > 0:
                probe.thread.start()
            rec_file = Path(tmp) / "sent.json"
            producer = subprocess.Popen(
                [sys.executable, __file__, "--produce", "--bootstrap", f"127.0.0.1:{kafka_port}", "--topic",
                 eff.topic, "--rate", str(a.rate), "--seconds", str(a.seconds), "--burst-ms", str(a.burst_ms),
                 "--run-id", run_id, "--out", str(rec_file), "--seed", str(a.seed)],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True, stdout=subprocess.PIPE)
            assert producer.stdout is not None
            line = producer.stdout.readline()
            assert line.startswith("START"), f"producer: {line!r}"
            watch = CpuWatch(proc.pid, producer.pid, [wp.pid for wp, _ in workers])
            watch.start()
            line = producer.stdout.readline()
            assert line.startswith("DONE"), f"producer: {line!r}"
            out["cpu"] = watch.stop()
            producer.wait(30)
            sent_doc = json.loads(rec_file.read_text())
            recs = [r for r in sent_doc["events"] if r["acked"]]
            expected = {kind: {r["id"] for r in recs if KINDS[kind]["sees"](r)} for kind in KINDS}
            t_drain = time.monotonic()
            for _, conn in workers:
                conn.send(("expect", expected, a.drain_s))
            for _, conn in workers:
                recv(conn, "drained", a.drain_s + 600)
            out["drain_s"] = round(time.monotonic() - t_drain, 2)
            time.sleep(2.0)  # a moment for repeats
            probe.stop_ev.set()
            with httpx.Client(timeout=10) as hc:
                m1 = probe.read(hc)
                m1["t"] = time.monotonic()
            results: list[dict[str, Any]] = []
            for _, conn in workers:
                conn.send(("stop",))
            for _, conn in workers:
                results += recv(conn, "result", 120)[1]
        finally:
            for wp, conn in workers:
                if wp.is_alive():
                    with contextlib.suppress(OSError):
                        conn.send(("stop",))
                    wp.join(15)
                    if wp.is_alive():
                        wp.kill()
            if producer is not None:
                stop_proc(producer, 10)
            stop_proc(proc)
    out.update(analyse(a, results, sent_doc, recs, expected, probe.samples, m0, m1))
    out["machine_after"] = machine()
    out["seconds_total"] = round(time.monotonic() - t_begin, 1)
    return out


def analyse(a: argparse.Namespace, results: list[dict[str, Any]], sent_doc: dict[str, Any],
            recs: list[dict[str, Any]], expected: dict[str, set[str]], probe: list[tuple[float, float]],
            m0: dict[str, float], m1: dict[str, float]) -> dict[str, Any]:
    sent = {r["id"]: r["sent_at"] for r in recs}
    t_first = min(sent.values())
    steady = {i for i, t in sent.items() if t - t_first >= a.warmup}
    all_lat: list[float] = []
    by_kind: dict[str, list[float]] = {k: [] for k in KINDS}
    by_second: dict[str, dict[int, list[float]]] = {k: {} for k in KINDS}  # by second of sending
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    per_stream: list[dict[str, Any]] = []
    detail_mismatch = 0
    t0_wall, t1_wall = min(sent.values()), max(sent.values())
    in_window = 0
    for res in results:
        kind = res["kind"]
        ids: Counter[str] = Counter()
        for eid, at, sent_at in res["events"]:
            if eid not in sent:
                continue  # not acknowledged to the producer (none expected)
            ids[eid] += 1
            in_window += t0_wall <= at <= t1_wall
            if ids[eid] > 1:
                continue
            if abs(sent_at - sent[eid]) > 1e-6:
                detail_mismatch += 1
            if eid in steady:
                lat = at - sent[eid]
                all_lat.append(lat)
                by_kind[kind].append(lat)
                by_second[kind].setdefault(int(sent[eid] - t_first), []).append(lat)
                first[eid] = min(first.get(eid, at), at)
                last[eid] = max(last.get(eid, at), at)
        exp = expected[kind]
        per_stream.append({"kind": kind, "expected": len(exp), "received": sum(1 for i in ids if i in exp),
                           "missing": len(exp - set(ids)), "duplicates": sum(n - 1 for n in ids.values()),
                           "unexpected": sum(1 for i in ids if i not in exp), "other_events": res["other"],
                           "resumes": len(res["resumes"]),
                           "resumed_at_s": [round(t - t0_wall, 1) for t in res["resumes"]][:10],
                           "resumed_without_id": res["lost_position"], "ended_at_end": res["ended"],
                           "errors": res["errors"], "statuses": res["statuses"]})
    # stored (estimate): the n-th acknowledged event sent counts as stored when the stored count first reached n
    stored_lat: list[float] = []
    if probe:
        base = m0["auditlog_consumer_events_stored_total"]
        order = sorted(recs, key=lambda r: r["sent_at"])
        j = 0
        for n, r in enumerate(order, start=1):
            while j < len(probe) and probe[j][1] - base < n:
                j += 1
            if j == len(probe):
                break
            if r["id"] in steady:
                stored_lat.append(probe[j][0] - r["sent_at"])
    d = {k: m1[k] - m0[k] for k in METRICS}
    flushes = d["auditlog_consumer_flush_seconds_count"]
    window = m1["t"] - m0["t"]
    produce_s = sent_doc["produce_s"]
    totals = {k: sum(s[k] for s in per_stream) for k in ("expected", "received", "missing", "duplicates",
                                                         "unexpected")}
    return {
        "events": {"sent": len(sent_doc["events"]), "acked": len(recs), "steady": len(steady),
                   "produce_s": round(produce_s, 2), "rate_achieved": round(len(recs) / produce_s),
                   "burst_size": sent_doc["burst_size"], "burst_late_p99_ms": sent_doc["burst_late_p99_ms"],
                   "burst_late_max_ms": sent_doc["burst_late_max_ms"]},
        "latency": latency_ms(all_lat, mean=True),
        "latency_by_kind": {k: latency_ms(v, mean=True) for k, v in by_kind.items()},
        "latency_by_send_second_ms": {k: {str(sec): [round(percentile(v, 50) * 1000), round(max(v) * 1000)]
                                          for sec, v in sorted(secs.items())} for k, secs in by_second.items()},
        "latency_by_send_second_note": "per kind of stream: second of sending -> [p50, max] ms",
        "first_receipt": latency_ms([first[i] - sent[i] for i in first], mean=True),
        "stored_estimate": {**latency_ms(stored_lat, mean=True), "resolution_ms": a.probe_ms},
        "fanout_spread": latency_ms([last[i] - first[i] for i in first], mean=True),
        "delivery": {**totals, "streams": len(per_stream),
                     "streams_complete": sum(1 for s in per_stream if s["missing"] == 0 and s["duplicates"] == 0
                                             and s["unexpected"] == 0),
                     "resumes": sum(s["resumes"] for s in per_stream),
                     "streams_resumed": sum(1 for s in per_stream if s["resumes"]),
                     "streams_ended_at_end": sum(1 for s in per_stream if s["ended_at_end"]),
                     "detail_sent_at_mismatch": detail_mismatch,
                     "demand_frames_per_s": round(totals["expected"] / produce_s),
                     "delivered_frames_per_s_while_producing": round(in_window / (t1_wall - t0_wall))},
        "per_stream": per_stream,
        "server_metrics": {
            "consumer_flushes": int(flushes),
            "consumer_flush_mean_ms": round(d["auditlog_consumer_flush_seconds_sum"] / flushes * 1000, 1)
            if flushes else None,
            "consumer_flush_ranges_per_s": round(flushes / window, 2),
            "consumer_batch_messages_mean": round(d["auditlog_consumer_batch_messages_sum"]
                                                  / max(1, d["auditlog_consumer_batch_messages_count"]), 1),
            "consumer_commits": int(d["auditlog_consumer_commits_total"]),
            "tail_polls": int(d["auditlog_api_tail_polls_total"]),
            "tail_poll_period_s": round(window / d["auditlog_api_tail_polls_total"], 3)
            if d["auditlog_api_tail_polls_total"] else None,
            "tail_frames_queued": int(d["auditlog_api_tail_events_total"]),
            "window_s": round(window, 1),
            "note": "deltas from just before producing to the end of the drain (+2 s); a flush is one partition "
                    "range (events are keyed by org: acme and globex each map to one partition)",
        },
    }


def commit() -> str:
    c = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                       text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return c + ("+dirty" if dirty else "")


def report(r: dict[str, Any], path: Path) -> None:
    print(f"\nlive tail: {r['streams']['total']} streams, {r['events']['rate_achieved']} ev/s for "
          f"{r['events']['produce_s']} s ({r['label']}; poll {r['settings']['api_tail_poll_seconds']} s, "
          f"batch_min/max {r['settings']['batch_min_seconds']}/{r['settings']['batch_max_seconds']} s); "
          f"first {r['load']['warmup_s']} s left out")
    print(f"{'':<22}{'n':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")

    def row(name: str, p: dict[str, Any]) -> None:
        if p.get("n"):
            print(f"{name:<22}{p['n']:>9}{p['p50_ms']:>9}{p['p95_ms']:>9}{p['p99_ms']:>9}{p['max_ms']:>9}")

    row("all (stream, event)", r["latency"])
    for k, p in r["latency_by_kind"].items():
        row(f"  {k} x{r['streams'].get(k, 0)}", p)
    row("stored (estimate)", r["stored_estimate"])
    row("first receipt", r["first_receipt"])
    row("fan-out spread", r["fanout_spread"])
    d = r["delivery"]
    print(f"delivery: {d['received']}/{d['expected']} (missing {d['missing']}, duplicates {d['duplicates']}, "
          f"unexpected {d['unexpected']}); {d['streams_complete']}/{d['streams']} streams exact, "
          f"{d['resumes']} resumes after overrun ({d['streams_resumed']} streams); frames/s: demand {d['demand_frames_per_s']}, delivered while producing "
          f"{d['delivered_frames_per_s_while_producing']}")
    c = r["cpu"]["mean_pct"]
    print("CPU % (100 = one core): " + ", ".join(f"{k} {v}" for k, v in c.items()))
    print("up process threads %: " + ", ".join(f"{k} {v}" for k, v in r["cpu"]["up_process_threads_pct"].items()))
    s = r["server_metrics"]
    print(f"consumer: {s['consumer_flushes']} range flushes ({s['consumer_flush_ranges_per_s']}/s, mean "
          f"{s['consumer_flush_mean_ms']} ms, {s['consumer_batch_messages_mean']} msgs); tail polls "
          f"{s['tail_polls']} (every {s['tail_poll_period_s']} s)")
    print(f"load average {r['machine_before']['loadavg_1m']} -> {r['machine_after']['loadavg_1m']}; "
          f"{r['seconds_total']} s; written {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=50, help="streams, in the default mix of kinds [50]")
    ap.add_argument("--mix", default=None, help="streams per kind instead, e.g. owner=2,ws_admin=10,"
                    "owner_failed=28,globex_owner=10 (kinds: " + ", ".join(KINDS) + ")")
    ap.add_argument("--rate", type=int, default=1000, help="events/s [1000]")
    ap.add_argument("--seconds", type=float, default=30.0, help="produce for this long [30]")
    ap.add_argument("--burst-ms", type=float, default=50.0, help="a burst every this many ms [50]")
    ap.add_argument("--warmup", type=float, default=5.0, help="leave out events sent in the first seconds [5]")
    ap.add_argument("--poll", type=float, default=None, help="api_tail_poll_seconds [the setting's default]")
    ap.add_argument("--env", action="append", default=[], help="more AUDITLOG_X=value for `up` (repeatable)")
    ap.add_argument("--probe-ms", type=float, default=100.0, help="/metrics probe period, 0: none [100]")
    ap.add_argument("--drain-s", type=float, default=20.0, help="give up when nothing arrives for this long [20]")
    ap.add_argument("--resume-delay", type=float, default=0.0,
                    help="seconds before a stream the server ended resumes with Last-Event-ID [0]")
    ap.add_argument("--gc", action="store_true", help="keep the client process's cyclic GC on (it doubles the "
                    "client's parse cost once ~10^6 events are held)")
    ap.add_argument("--client-procs", type=int, default=5,
                    help="processes the SSE streams are spread over (round robin), each a thread per stream [5]")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--label", default=None)
    ap.add_argument("--produce", action="store_true", help=argparse.SUPPRESS)  # internal: the producer process
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    ap.add_argument("--run-id", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.produce:
        asyncio.run(produce(args))
        sys.exit(0)
    res = main(args)
    path = ROOT / "bench" / "results" / "tail.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    report(res, write_result("tail", {"runs": [*runs, res][-20:]}))
