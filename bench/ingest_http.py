"""HTTP ingest benchmark: ``POST /v1/ingest`` events/s for 1k-event NDJSON batches beside the producer SDK's rate.

One embedded broker (started here), a 6-partition topic. The API runs as ``auditlog api`` does (the real app,
uvicorn on 127.0.0.1, the producer attached as its self-audit producer, in a process of its own, log level info);
``--clients`` concurrent httpx clients in this process post pre-encoded bodies of ``--batch`` events (a service
token, the ingest rate limit off) until ``-n`` events were accepted, each request answered only after the broker
acknowledged its events. Then, on the same broker and run, the SDK in this process: ``AuditProducer.send_many``
of the same events in chunks of ``--batch`` (validate, send, wait for every ack) and ``send`` in a loop with one
``flush`` at the end. Rounds alternate (``--rounds``); the best rate of each is reported, with the API process's CPU
microseconds per event and request latency p50/p95. Writes ``bench/results/ingest_http.json``.

Run: ``.venv/bin/python bench/ingest_http.py [-n 50000] [--batch 1000] [--clients 4] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import ROOT, cpu_seconds_of, machine, percentile, write_result

from auditlogkit.producer import AuditProducer
from auditlogkit.query_api.security.auth import mint_token
from auditlogkit.server import logs
from auditlogkit.server.broker import EmbeddedBroker, ensure_topics, free_port
from tests.factories import random_events

SECRET = "bench-ingest-secret-0123456789abcdef0123"


# ----- the API process -----------------------------------------------------------------------------------------
async def serve(port: int, data: str) -> None:
    import uvicorn

    from auditlogkit.query_api.core.app import create_app
    from auditlogkit.server.db.migrations import migrate
    from auditlogkit.server.settings import Settings
    from auditlogkit.server.store import Store

    settings = Settings()  # AUDITLOG_* from the parent
    logs.configure(settings.log_level, file=open(os.devnull, "w"))  # noqa: SIM115 -- the process's whole life
    store = Store(f"chdb://{data}", "bench")
    migrate(store)
    producer = AuditProducer(settings.kafka_bootstrap, settings.topic, request_timeout_ms=5000)
    await producer.start()
    app = create_app(settings, store, producer=producer)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    print("READY", flush=True)
    await task
    await producer.stop()


def start_api(port: int, bootstrap: str, topic: str, data: Path) -> subprocess.Popen[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AUDITLOG_")}, "PYTHONPATH": str(ROOT),
           "AUDITLOG_KAFKA_BOOTSTRAP": bootstrap, "AUDITLOG_TOPIC": topic, "AUDITLOG_JWT_SECRET": SECRET,
           "AUDITLOG_API_INGEST_RATE_PER_SECOND": "0", "AUDITLOG_DATA_DIR": str(data), "AUDITLOG_LOG_LEVEL": "info"}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--data", str(data / "chdb")],
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY"):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return proc
    raise RuntimeError("the API process exited before READY")


# ----- the clients --------------------------------------------------------------------------------------------
async def http_round(base: str, bodies: list[bytes], clients: int, batch: int, api: psutil.Process) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {mint_token(SECRET, sub='svc-bench', role='service', write_orgs=['*'])}",
               "Content-Type": "application/x-ndjson"}
    todo = list(range(len(bodies)))
    latencies: list[float] = []
    accepted = 0

    async def worker(c: httpx.AsyncClient) -> None:
        nonlocal accepted
        while todo:
            body = bodies[todo.pop()]
            t0 = time.perf_counter()
            r = await c.post("/v1/ingest", content=body, headers=headers)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 202, r.text[:300]
            accepted += r.json()["accepted"]

    async with httpx.AsyncClient(base_url=base, timeout=120,
                                 limits=httpx.Limits(max_connections=clients)) as c:
        assert (await c.post("/v1/ingest", content=bodies[0], headers=headers)).status_code == 202  # warm-up
        cpu0, t0 = cpu_seconds_of(api), time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(clients)))
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds_of(api) - cpu0
    assert accepted == len(bodies) * batch, accepted
    return {"events": accepted, "seconds": round(elapsed, 2), "events_per_s": round(accepted / elapsed),
            "requests": len(bodies), "p50_ms": round(percentile(latencies, 50), 1),
            "p95_ms": round(percentile(latencies, 95), 1), "api_cpu_us_per_event": round(cpu / accepted * 1e6, 1)}


async def sdk_round(bootstrap: str, topic: str, events: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    async with AuditProducer(bootstrap, topic) as p:
        await p.send_many(events[:batch])  # warm-up: connections and metadata
        me = psutil.Process()
        cpu0, t0 = cpu_seconds_of(me), time.perf_counter()
        for i in range(0, len(events), batch):
            await p.send_many(events[i:i + batch])
        many_s, many_cpu = time.perf_counter() - t0, cpu_seconds_of(me) - cpu0
        t0 = time.perf_counter()
        for ev in events:
            await p.send(ev)
        await p.flush()
        loop_s = time.perf_counter() - t0
    n = len(events)
    return {"events": n, "send_many_events_per_s": round(n / many_s), "send_many_cpu_us_per_event":
            round(many_cpu / n * 1e6, 1), "send_loop_events_per_s": round(n / loop_s)}


async def run(a: argparse.Namespace) -> dict[str, Any]:
    print(f"building {a.n:,} events ...", flush=True)
    events = random_events(a.n, seed=7)
    lines = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    bodies = [b"\n".join(lines[i:i + a.batch]) + b"\n" for i in range(0, len(lines), a.batch)]
    out: dict[str, Any] = {"n": a.n, "batch": a.batch, "clients": a.clients, "rounds": a.rounds,
                           "body_bytes": round(sum(map(len, bodies)) / len(bodies)), "machine_before": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-http-") as tmp, EmbeddedBroker() as broker:
        http_topic, sdk_topic = "bench.http", "bench.sdk"
        await ensure_topics(broker.bootstrap, [http_topic, sdk_topic], 6)
        port = free_port()
        proc = start_api(port, broker.bootstrap, http_topic, Path(tmp))
        try:
            api = psutil.Process(proc.pid)
            http_runs, sdk_runs = [], []
            for r in range(a.rounds):
                h = await http_round(f"http://127.0.0.1:{port}", bodies, a.clients, a.batch, api)
                print(f"round {r + 1} HTTP: {h}", flush=True)
                s = await sdk_round(broker.bootstrap, sdk_topic, events, a.batch)
                print(f"round {r + 1} SDK : {s}", flush=True)
                http_runs.append(h)
                sdk_runs.append(s)
        finally:
            proc.terminate()
            proc.wait(30)
    best_http = max(h["events_per_s"] for h in http_runs)
    best_many = max(s["send_many_events_per_s"] for s in sdk_runs)
    best_loop = max(s["send_loop_events_per_s"] for s in sdk_runs)
    out.update({"http_runs": http_runs, "sdk_runs": sdk_runs, "machine_after": machine(), "summary": {
        "http_events_per_s": best_http, "sdk_send_many_events_per_s": best_many,
        "sdk_send_loop_events_per_s": best_loop, "http_vs_send_many": round(best_http / best_many, 2),
        "api_cpu_us_per_event": min(h["api_cpu_us_per_event"] for h in http_runs)},
        "via": "API: the real app under uvicorn in its own process (self-audit producer attached); clients: httpx "
               "in the bench process; SDK: AuditProducer in the bench process; one embedded Tansu broker"})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=50_000, help="events per round")
    ap.add_argument("--batch", type=int, default=1000, help="events per request / per send_many")
    ap.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve is not None:
        asyncio.run(serve(a.serve, a.data))
        return 0
    logs.configure("warning")
    result = asyncio.run(run(a))
    s = result["summary"]
    print(f"HTTP ingest {s['http_events_per_s']:,} events/s ({a.clients} clients, {a.batch}-event NDJSON, "
          f"{s['api_cpu_us_per_event']} us API CPU/event); SDK send_many {s['sdk_send_many_events_per_s']:,} events/s, "
          f"send loop {s['sdk_send_loop_events_per_s']:,} events/s; HTTP/SDK = {s['http_vs_send_many']}")
    print(f"wrote {write_result('ingest_http', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
