"""Latency of ``GET /v1/events`` while ``auditlog up`` ingests at full speed, beside its idle latency.

Starts ``auditlog up`` (from ``--tree``: this checkout, or a git worktree of another commit for a side-by-side
run) on a fresh data directory and free loopback ports. 5 readers (each its own caller) call
``/v1/events?limit=50`` in a loop: first for ``--seconds`` while idle, then while ``-n`` events published at once
(pre-encoded, by a process of its own) are consumed, until ``/readyz`` reports them stored. Prints
p50/p95 of both phases, the ingest rate, and writes bench/results/api_during_ingest.json (one entry per tree).
Target: p95 during ingest <= 100 ms.

    .venv/bin/python bench/api_during_ingest.py [--tree /tmp/prev] [-n 200000] [--ephemeral]

``up``'s broker is durable by default (``--ephemeral``: memory); the entry says which ("broker").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
from aiokafka import AIOKafkaProducer
from common import ROOT, machine, percentile, tree_pythonpath, write_result

from auditlogkit.query_api.security.auth import mint_token
from auditlogkit.server.broker import free_port
from tests.factories import random_events


def start_up(tree: Path, data: Path, port: int, kafka_port: int, extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": tree_pythonpath(tree), "AUDITLOG_API_RATE_PER_SECOND": "0", "AUDITLOG_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "auditlogkit.server.app.cli", "up", "--port", str(port), "--kafka-port",
                             str(kafka_port), "--data", str(data), *extra], cwd=tree, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY"):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return proc
    raise RuntimeError("auditlog up exited before READY")


def token(data: Path, sub: str) -> str:
    """A reader's token, signed with the secret ``up`` generated in ``data``."""
    return mint_token((data / "jwt-secret").read_text().strip(), sub=sub, email=f"{sub}@acme.example",
                      org_id="acme", role="org_owner", permissions=("audit:read",), ttl_seconds=3600)


def consumer(url: str) -> dict[str, Any]:
    """The embedded consumer's status in /readyz (green or red)."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=10) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
    return dict(body.get("consumer", {}))


def handled(url: str) -> int:
    """Messages the consumer has consumed, with its lag: the published ones are handled once lag is 0."""
    c = consumer(url)
    return int(c.get("consumed", 0)) if int(c.get("lag_total", 1)) == 0 else -1


class Readers:
    def __init__(self, url: str, data: Path, n: int, path: str = "/v1/events?limit=50") -> None:
        self.url, self.data, self.n, self.path = url, data, n, path
        self.lat: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def _one(self, i: int) -> None:
        h = {"Authorization": f"Bearer {token(self.data, f'reader-{i}')}"}
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                r = c.get(self.path, headers=h)
                if r.status_code == 200:
                    self.lat.append(time.perf_counter() - t0)
                else:
                    self.errors += 1
                time.sleep(0.05)  # a person's page, not a load test: ~20 calls/s per reader at most

    def run_until(self, done: Any) -> dict[str, Any]:
        threads = [threading.Thread(target=self._one, args=(i,)) for i in range(self.n)]
        for t in threads:
            t.start()
        try:
            done()
        finally:
            self.stop.set()
            for t in threads:
                t.join()
        return {"requests": len(self.lat), "errors": self.errors,
                "p50_ms": round(percentile(self.lat, 50) * 1000, 1), "p95_ms": round(percentile(self.lat, 95) * 1000, 1)}


async def publish(bootstrap: str, values: list[tuple[bytes, bytes]]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, compression_type="lz4")
    await p.start()
    try:
        futs = [await p.send("audit.events", value=v, key=k) for k, v in values]
        await asyncio.gather(*futs)
    finally:
        await p.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default=str(ROOT))
    ap.add_argument("-n", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--readers", type=int, default=5)
    ap.add_argument("--path", default="/v1/events?limit=50", help="what the readers GET [/v1/events?limit=50]")
    ap.add_argument("--ephemeral", action="store_true", help="up --ephemeral: the memory broker (default: durable)")
    ap.add_argument("--publish", help=argparse.SUPPRESS)  # internal: publish this file's "key\tvalue" lines
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publish:
        lines = Path(args.publish).read_bytes().splitlines()
        asyncio.run(publish(args.bootstrap, [tuple(line.split(b"\t", 1)) for line in lines]))  # type: ignore[misc]
        return 0
    tree = Path(args.tree).resolve()
    # no audit_log actions: a tree of another commit may not know this catalog's newest ones (it would dead-letter)
    evs = [e for e in random_events(args.n * 11 // 10, seed=5, orgs=("acme", "globex", "initech"), days=7)
           if e["category"] != "audit_log"][: args.n]
    values = [(e["org_id"].encode(), json.dumps(e).encode()) for e in evs]
    port, kafka_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="auditlog-bench-ingest-api-") as tmp:
        data = Path(tmp)
        proc = start_up(tree, data, port, kafka_port, ("--ephemeral",) if args.ephemeral else ())
        try:
            idle = Readers(url, data, args.readers, args.path).run_until(lambda: time.sleep(args.seconds))
            base = int(consumer(url).get("consumed", 0))
            t0 = time.monotonic()
            # published by a process of its own: its CPU work must not hold up the readers' threads (one GIL)
            (data / "values.ndjson").write_bytes(b"".join(k + b"\t" + v + b"\n" for k, v in values))
            pub = threading.Thread(target=lambda: subprocess.run(
                [sys.executable, __file__, "--publish", str(data / "values.ndjson"), "--bootstrap",
                 f"127.0.0.1:{kafka_port}"], check=True))

            def until_stored() -> None:  # every published message consumed (stored or dead-lettered), lag 0
                pub.start()
                last = 0.0
                while pub.is_alive() or handled(url) < base + args.n:
                    assert time.monotonic() - t0 < 600, "not consumed within 10 min"
                    if time.monotonic() - last > 5:
                        print(f"consumed {int(consumer(url).get('consumed', 0)) - base:,} of {args.n:,}",
                              file=sys.stderr)
                        last = time.monotonic()
                    time.sleep(0.2)

            during = Readers(url, data, args.readers, args.path).run_until(until_stored)
            took = time.monotonic() - t0
            pub.join()
            time.sleep(2.0)  # the last batch's age
            final = {k: consumer(url).get(k) for k in ("consumed", "stored", "dead_lettered", "skipped_stored",
                                                       "flushes", "store_failing", "held_messages", "lag_total")}
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(60)
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    changed = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True).stdout.strip()
    commit += "+dirty" if changed else ""
    broker = "memory" if args.ephemeral or "--ephemeral" not in subprocess.run(
        [sys.executable, "-m", "auditlogkit.server.app.cli", "up", "--help"], cwd=tree, env={**os.environ, "PYTHONPATH": tree_pythonpath(tree)},
        capture_output=True, text=True).stdout else "durable"
    result = {"tree": str(tree), "commit": commit, "broker": broker, "events": args.n, "readers": args.readers, "idle": idle,
              "during_ingest": during, "ingest_events_per_s": round(args.n / took), "consumer_after": final, "target": "p95 during <= 100 ms",
              "machine": machine()}
    print(json.dumps(result, indent=2))
    path = ROOT / "bench" / "results" / "api_during_ingest.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    same = (commit, broker)
    write_result("api_during_ingest", {"runs": [r for r in runs if (r.get("commit"), r.get("broker", "memory")) != same]
                                       + [result]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
