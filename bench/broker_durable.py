"""The embedded broker's storage: Tansu ``memory://`` against ``s3://`` over ``auditlogkit.server.s3disk``, same run.

Per storage: a fresh Tansu (and s3disk on a fresh directory), one topic (``--partitions``), N events (default
50k, JSON of tests/factories.py, keyed by org_id) published with the project producer's settings (acks=all,
linger 5 ms, lz4, 512 KiB batches, 2 MiB requests) and waited for: produce msg/s; then one aiokafka consumer
(assigned, from the first offset, 4 MiB per partition fetch like the consumer worker) reads them all: consume
msg/s; and ``--acks`` single events sent one at a time (``send_and_wait``, a lone event of the API): ack latency
p50/p95. Also: start -> Kafka port open, batch objects and bytes on disk (s3). The storages alternate for
``--rounds`` rounds; the best rate and the lowest latencies of each are reported. Writes
``bench/results/broker_durable.json``.

Run: ``.venv/bin/python bench/broker_durable.py [-n 50000] [--partitions 3] [--acks 300] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from common import machine, percentile, write_result

from auditlogkit.server.broker import broker_binary, ensure_topics, free_port
from tests.factories import random_events

TOPIC = "bench.durable"


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return time.monotonic()
        time.sleep(0.005)
    raise RuntimeError(f"port {port} did not open")


def start(storage: str, root: Path) -> tuple[list[subprocess.Popen[bytes]], str, float]:
    """(processes, bootstrap, seconds from the first start to the Kafka port open)."""
    kport = free_port()
    url = f"tcp://127.0.0.1:{kport}"
    env = {**os.environ, "RUST_LOG": "warn"}
    procs: list[subprocess.Popen[bytes]] = []
    t0 = time.monotonic()
    engine = "memory://tansu/"
    if storage == "s3":
        s3port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "auditlogkit.server.s3disk", "--root", str(root), "--port",
                                       str(s3port)], stderr=subprocess.DEVNULL))
        wait_port(s3port, procs[-1])
        engine = "s3://tansu/"
        env.update(AWS_ENDPOINT=f"http://127.0.0.1:{s3port}", AWS_ALLOW_HTTP="true", AWS_SKIP_SIGNATURE="true",
                   AWS_REGION="us-east-1")
    procs.append(subprocess.Popen([broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                                   "--storage-engine", engine], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
    ready = wait_port(kport, procs[-1])
    return procs, f"127.0.0.1:{kport}", ready - t0


async def produce(bootstrap: str, msgs: list[tuple[bytes, bytes]]) -> float:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, compression_type="lz4",
                         max_batch_size=512 * 1024, max_request_size=2 * 1024 * 1024)
    await p.start()
    try:
        await p.send_and_wait(TOPIC, b"warm-up")
        t0 = time.perf_counter()
        futs = [await p.send(TOPIC, value=v, key=k) for k, v in msgs]
        await asyncio.gather(*futs)
        return len(msgs) / (time.perf_counter() - t0)
    finally:
        await p.stop()


async def ack_latency(bootstrap: str, msgs: list[tuple[bytes, bytes]]) -> dict[str, float]:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, compression_type="lz4",
                         max_batch_size=512 * 1024, max_request_size=2 * 1024 * 1024)
    await p.start()
    try:
        took = []
        for k, v in msgs:
            t0 = time.perf_counter()
            await p.send_and_wait(TOPIC, value=v, key=k)
            took.append((time.perf_counter() - t0) * 1000)
        return {"ack_p50_ms": round(percentile(took, 50), 2), "ack_p95_ms": round(percentile(took, 95), 2)}
    finally:
        await p.stop()


async def consume(bootstrap: str, partitions: int, want: int) -> float:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         max_partition_fetch_bytes=4 * 1024 * 1024)
    await c.start()
    try:
        tps = [TopicPartition(TOPIC, p) for p in range(partitions)]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        got, t0 = 0, time.perf_counter()
        deadline = time.monotonic() + 300
        while got < want and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=1000, max_records=10_000)
            got += sum(len(ms) for ms in batch.values())
        if got < want:
            raise RuntimeError(f"read {got} of {want}")
        return got / (time.perf_counter() - t0)
    finally:
        await c.stop()


def disk(root: Path) -> dict[str, int]:
    files = [p for p in root.rglob("*.batch")]
    return {"batch_objects": len(files), "batch_bytes": sum(p.stat().st_size for p in files)}


async def run(storage: str, root: Path, msgs: list[tuple[bytes, bytes]], partitions: int, acks: int
              ) -> dict[str, Any]:
    procs, bootstrap, up_s = start(storage, root)
    try:
        await ensure_topics(bootstrap, [TOPIC], partitions)
        out: dict[str, Any] = {"start_to_kafka_port_s": round(up_s, 3)}
        out["produce_msg_per_s"] = round(await produce(bootstrap, msgs))
        out["consume_msg_per_s"] = round(await consume(bootstrap, partitions, len(msgs) + 1))
        out.update(await ack_latency(bootstrap, msgs[:acks]))
        if storage == "s3":
            out.update(disk(root))
        return out
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
            p.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=50_000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--acks", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    events = random_events(a.n)
    msgs = [(str(e["org_id"]).encode(), orjson.dumps(e)) for e in events]
    result: dict[str, Any] = {
        "machine": machine(), "messages": a.n, "partitions": a.partitions,
        "mean_message_bytes": round(sum(len(v) for _, v in msgs) / len(msgs)),
        "producer": "aiokafka acks=all linger_ms=5 lz4 max_batch_size=512KiB max_request_size=2MiB (AuditProducer's)",
        "consumer": "aiokafka, assigned, from offset 0, max_partition_fetch_bytes=4MiB, fetch_max_wait_ms=500",
    }
    tmp = Path(tempfile.mkdtemp(prefix="broker-durable-"))
    try:
        runs: dict[str, list[dict[str, Any]]] = {"memory": [], "s3": []}
        for r in range(a.rounds):
            for storage in ("memory", "s3"):
                runs[storage].append(asyncio.run(run(storage, tmp / f"{storage}-{r}", msgs, a.partitions, a.acks)))
                print(storage, runs[storage][-1], flush=True)
        for storage, rs in runs.items():
            result[storage] = {k: (max if k.endswith("per_s") else min)(x[k] for x in rs) for k in rs[0]}
            result[storage]["runs"] = rs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    m, s = result["memory"], result["s3"]
    result["s3_vs_memory"] = {"produce": round(s["produce_msg_per_s"] / m["produce_msg_per_s"], 2),
                              "consume": round(s["consume_msg_per_s"] / m["consume_msg_per_s"], 2)}
    print("wrote", write_result("broker_durable", result))


if __name__ == "__main__":
    main()
