"""One consumer run of bench/ingest.py in a process of its own; prints one JSON line of results on stdout.

Run by bench/ingest.py with ``cwd`` and ``PYTHONPATH`` set to the tree under test, so ``auditlog``, ``consumers``
and ``schemas`` come from that tree (a worktree of another commit too): this file uses only APIs that every
measured tree has (``ConsumerWorker(settings, store)``, ``run``, ``request_stop``, ``stats``, ``status``;
``Settings``, ``Store``, ``migrate``, ``logs.configure``) and imports nothing else from this repository.
Modes:
- ``raw``: an aiokafka group consumer (``getmany`` + ``json.loads`` + ``commit``) reads ``-n`` messages;
- ``consume``: ``ConsumerWorker`` on a fresh chDB directory (``--chdb-dir``, this process's alone) from its
  first message until ``SELECT count() FROM audit_events FINAL`` = ``-n``;
- ``latency``: the worker runs while this process publishes ``--values`` (one JSON event a line) at ``--rate``/s
  and polls the ``audit_events_offsets`` aggregate every 20 ms: produce -> visible p50/p95.
CPU seconds (psutil, user + system) over the measured window: this process (all threads, chDB's included),
its child processes (the decode helpers) and the broker (``--broker-pid``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

HERE = Path(__file__).resolve().parent
# this file's directory comes first on sys.path: drop it, so that nothing in bench/ shadows the tree under test
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def cpu_snapshot(broker_pid: int) -> dict[str, Any]:
    """CPU seconds so far of this process, of its child processes (decode helpers) and of the broker."""
    me = psutil.Process()
    out: dict[str, Any] = {"consumer_process": _cpu(me), "helpers": 0.0, "broker": 0.0, "helper_pids": []}
    for ch in me.children(recursive=True):
        try:
            out["helpers"] += _cpu(ch)
            out["helper_pids"].append(ch.pid)
        except psutil.Error:
            continue
    if broker_pid:
        out["broker"] = _cpu(psutil.Process(broker_pid))
    return out


def cpu_delta(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, Any]:
    """CPU seconds spent per kind of process, and microseconds per event (with their total)."""
    kinds = ("consumer_process", "helpers", "broker")
    secs = {k: after[k] - before[k] for k in kinds}
    per = {k: round(secs[k] / n * 1e6, 2) for k in kinds}
    per["total"] = round(sum(secs.values()) / n * 1e6, 2)
    return {"cpu_seconds": {k: round(v, 3) for k, v in secs.items()}, "cpu_us_per_event": per,
            "helper_processes": len(set(before["helper_pids"]) | set(after["helper_pids"]))}


def origins() -> dict[str, str]:
    """Where the project's packages were imported from (the tree under test)."""
    return {name: str(sys.modules[name].__file__) for name in ("auditlogkit.server", "auditlogkit.consumers",
                                                               "auditlogkit.schemas", "auditlog", "consumers", "schemas")
            if name in sys.modules}


async def raw(a: argparse.Namespace) -> dict[str, Any]:
    c = AIOKafkaConsumer(a.topic, bootstrap_servers=a.bootstrap, group_id=a.group, enable_auto_commit=False,
                         auto_offset_reset="earliest", session_timeout_ms=6000,
                         max_partition_fetch_bytes=4 * 1024 * 1024)
    t_start = time.perf_counter()
    cpu0 = cpu_snapshot(a.broker_pid)
    await c.start()
    got = 0
    t_first = 0.0
    deadline = time.monotonic() + a.timeout
    try:
        while got < a.n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw consumer: {got} of {a.n} messages in {a.timeout} s")
            batch = await c.getmany(timeout_ms=200, max_records=5000)
            for recs in batch.values():
                if recs and not t_first:
                    t_first = time.perf_counter()
                for r in recs:
                    json.loads(r.value)
                got += len(recs)
            if batch:
                await c.commit()
        t_end = time.perf_counter()
        cpu1 = cpu_snapshot(a.broker_pid)
    finally:
        await c.stop()
    secs = t_end - t_first
    return {"messages": got, "seconds": round(secs, 3), "rate": round(got / secs),
            "rate_from_start": round(got / (t_end - t_start)), **cpu_delta(cpu0, cpu1, got)}


def _store_and_settings(a: argparse.Namespace) -> tuple[Any, Any]:
    from auditlogkit.server.db.migrations import migrate
    from auditlogkit.server.settings import Settings
    from auditlogkit.server.store import Store

    url = f"chdb://{Path(a.chdb_dir).resolve()}"
    store = Store(url, a.database)
    migrate(store)
    settings = Settings(data_dir=Path(a.chdb_dir).resolve().parent, kafka_bootstrap=a.bootstrap, topic=a.topic,
                        dlq_topic=a.dlq_topic, consumer_group=a.group, clickhouse_url=url,
                        clickhouse_database=a.database, session_timeout_ms=6000)
    return store, settings


def _count(store: Any) -> int:
    return int(store.client().query("SELECT count() FROM audit_events FINAL").result_rows[0][0])


async def consume(a: argparse.Namespace) -> dict[str, Any]:
    from auditlogkit.consumers.worker import ConsumerWorker

    store, settings = _store_and_settings(a)
    w = ConsumerWorker(settings, store)
    deadline = time.monotonic() + a.timeout
    t_start = time.perf_counter()
    cpu0 = cpu_snapshot(a.broker_pid)
    task = asyncio.create_task(w.run())
    t_first = 0.0
    while w.stats["stored"] < a.n:
        if not t_first and w.stats["consumed"]:
            t_first = time.perf_counter()
        if task.done():
            task.result()
            raise RuntimeError(f"worker returned after storing {w.stats['stored']} of {a.n}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker stored {w.stats['stored']} of {a.n} in {a.timeout} s: {w.status()}")
        await asyncio.sleep(0.005)
    t_stored = time.perf_counter()
    while (count := await asyncio.to_thread(_count, store)) < a.n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"count() FINAL = {count} of {a.n} after {a.timeout} s")
        await asyncio.sleep(0.005)
    t_end = time.perf_counter()
    cpu1 = cpu_snapshot(a.broker_pid)
    status = w.status()
    w.request_stop()
    await task
    secs = t_end - t_first
    return {"messages": a.n, "count_final": count, "seconds": round(secs, 3), "rate": round(a.n / secs),
            "rate_from_start": round(a.n / (t_end - t_start)),
            "stored_to_visible_s": round(t_end - t_stored, 3), **cpu_delta(cpu0, cpu1, a.n),
            "decode_helpers": status.get("decode_helpers"), "stats": dict(w.stats), "origins": origins()}


async def latency(a: argparse.Namespace) -> dict[str, Any]:
    """Publish ``--values`` at ``--rate``/s while the worker runs; visible = the offset aggregate covers it."""
    from auditlogkit.consumers.worker import ConsumerWorker

    values = [line for line in Path(a.values).read_bytes().splitlines() if line]
    store, settings = _store_and_settings(a)
    w = ConsumerWorker(settings, store)
    deadline = time.monotonic() + a.timeout
    task = asyncio.create_task(w.run())
    while not w.status()["assigned"]:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no partitions assigned in {a.timeout} s")
        await asyncio.sleep(0.05)
    sent: dict[tuple[int, int], float] = {}
    visible: dict[int, list[tuple[float, int]]] = {}
    stop = threading.Event()

    def poll() -> None:
        c = store.client()
        while not stop.is_set():
            rows = c.query("SELECT kafka_partition, max(max_offset) FROM audit_events_offsets "
                           "WHERE kafka_topic = {t:String} GROUP BY kafka_partition",
                           parameters={"t": a.topic}).result_rows
            now = time.perf_counter()
            for p, o in rows:
                visible.setdefault(int(p), []).append((now, int(o)))
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    p = AIOKafkaProducer(bootstrap_servers=a.bootstrap, linger_ms=5, acks=1)
    await p.start()
    t0 = time.perf_counter()
    futs = []
    try:
        for i, v in enumerate(values):
            delay = t0 + i / a.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            futs.append((time.perf_counter(), await p.send(a.topic, v)))
        publish_s = time.perf_counter() - t0
        for t_send, f in futs:
            md = await f
            sent[(md.partition, md.offset)] = t_send
    finally:
        await p.stop()
    while w.stats["stored"] < len(values):
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker stored {w.stats['stored']} of {len(values)} in {a.timeout} s")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    stop.set()
    poller.join()
    w.request_stop()
    await task
    lat = []
    for (part, off), t_send in sent.items():
        seen = next((t for t, o in visible.get(part, []) if o >= off), None)
        if seen is not None:
            lat.append((seen - t_send) * 1000)
    lat.sort()

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, max(0, round(q / 100 * (len(lat) - 1))))], 1) if lat else None

    return {"messages": len(values), "rate_per_s": a.rate, "published_rate": round(len(values) / publish_s),
            "measured": len(lat), "p50_ms": pct(50), "p95_ms": pct(95), "max_ms": round(lat[-1], 1) if lat else None,
            "batch_max_seconds": getattr(settings, "batch_max_seconds", None), "stats": dict(w.stats),
            "origins": origins()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("raw", "consume", "latency"), required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--dlq-topic", default="")
    ap.add_argument("--group", default="", help="consumer group [a fresh one]")
    ap.add_argument("--chdb-dir", default="", help="chDB directory of this process alone (consume, latency)")
    ap.add_argument("--database", default="bench")
    ap.add_argument("-n", type=int, default=0, help="messages to read (raw, consume)")
    ap.add_argument("--values", default="", help="file of events to publish, one JSON a line (latency)")
    ap.add_argument("--rate", type=int, default=5_000, help="publish rate, events/s (latency)")
    ap.add_argument("--broker-pid", type=int, default=0, help="broker process whose CPU is measured")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    a = ap.parse_args()
    a.group = a.group or f"bench-{a.mode}-{uuid.uuid4().hex[:6]}"
    if a.mode != "raw":
        if not a.chdb_dir or not a.dlq_topic:
            ap.error(f"--mode {a.mode} needs --chdb-dir and --dlq-topic")
        from auditlogkit.server import logs

        logs.configure("warning")
    run = {"raw": raw, "consume": consume, "latency": latency}[a.mode]
    res = asyncio.run(run(a))
    print(json.dumps({"mode": a.mode, **res}), flush=True)


if __name__ == "__main__":
    main()
