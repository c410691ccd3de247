"""Latency of ``GET /v1/events`` while exports stall: idle, then with 12 stalled exports open.

Starts a Tansu broker and ``auditlog api`` (as its own process, from ``--tree``: this checkout or a git worktree
of another commit, for a side-by-side run) on a chDB directory holding ``--rows`` events of one org written by
ClickHouse itself. 20 readers (each its own caller) call ``/v1/events?limit=50`` in a loop for ``--seconds``;
then 12 clients open ``/v1/events/export?format=csv`` over all time and never read (a 4 KiB receive window), and
the readers run again. Prints p50/p95/p99, errors and timeouts of both phases and the p95 ratio; writes
bench/results/api_stalled.json (one entry per tree). Target: p95 with stalled exports within 2x of idle.

    .venv/bin/python bench/api_stalled.py                       # this checkout
    .venv/bin/python bench/api_stalled.py --tree /tmp/prev      # another commit's worktree, same data
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
from common import ROOT, machine, percentile, tree_pythonpath, write_result

from auditlogkit.query_api.security.auth import mint_token

SECRET = "bench-secret-0123456789abcdef0123456789"
BULK = """INSERT INTO audit_events (org_id, occurred_at, event_id, scope, category, action, status, actor_id,
actor_email, actor_type, description, received_at, kafka_topic, kafka_partition, kafka_offset)
SELECT 'acme', now64(3) - toIntervalMillisecond(number * 50), generateUUIDv4(number), 'service', 'vm', 'vm.create',
'SUCCESS', concat('u-', toString(number % 1000)), concat('user', toString(number % 1000), '@acme.example'), 'user',
concat('created vm ', hex(sipHash64(number)), ' in a realistic sentence of about this length'), now64(3), 'bulk', 0,
number FROM numbers({n:UInt64})"""


def token(sub: str) -> str:
    return mint_token(SECRET, sub=sub, email=f"{sub}@acme.example", org_id="acme", role="org_owner", ttl_seconds=3600)


def load(data: Path, rows: int) -> None:
    """Fill ``data`` with ``rows`` events once (this checkout's schema; both trees read it)."""
    from auditlogkit.server.db.migrations import migrate
    from auditlogkit.server.store import Store

    store = Store(f"chdb://{data}", "auditlog")
    migrate(store)
    have = store.client().query("SELECT count() FROM audit_events").result_rows[0][0]
    if have < rows:
        store.client().command("TRUNCATE TABLE audit_events")
        store.client().command(BULK, parameters={"n": rows})
    store.close()


def serve(tree: Path, data: Path, bootstrap: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": tree_pythonpath(tree), "AUDITLOG_CLICKHOUSE_URL": f"chdb://{data}",
           "AUDITLOG_JWT_SECRET": SECRET, "AUDITLOG_KAFKA_BOOTSTRAP": bootstrap, "AUDITLOG_TOPIC": "bench.audit",
           "AUDITLOG_API_EXPORTS_TOTAL": "12", "AUDITLOG_API_EXPORTS_PER_CALLER": "12",
           "AUDITLOG_API_RATE_PER_SECOND": "0", "AUDITLOG_LOG_LEVEL": "warning"}
    out = log.open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "auditlogkit.server.app.cli", "api", "--port", str(port)], cwd=tree, env=env,
                            stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if json.loads(r.read()).get("self_audit") == "ok":
                    return proc
        except OSError:
            pass
        assert proc.poll() is None, f"api exited: see {log}"
        time.sleep(0.5)
    raise RuntimeError(f"api not ready: see {log}")


def readers(url: str, n: int, seconds: float) -> dict[str, Any]:
    lat: list[float] = []
    errors = timeouts = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def one(i: int) -> None:
        nonlocal errors, timeouts
        h = {"Authorization": f"Bearer {token(f'reader-{i}')}"}
        with httpx.Client(base_url=url, timeout=10) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    r = c.get("/v1/events", params={"limit": 50}, headers=h)
                    ok = r.status_code == 200
                except httpx.TimeoutException:
                    with lock:
                        timeouts += 1
                    continue
                took = time.perf_counter() - t0
                with lock:
                    if ok:
                        lat.append(took)
                    else:
                        errors += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"requests": len(lat), "errors": errors, "timeouts": timeouts,
            "p50_ms": round(percentile(lat, 50) * 1000, 1) if lat else None,
            "p95_ms": round(percentile(lat, 95) * 1000, 1) if lat else None,
            "p99_ms": round(percentile(lat, 99) * 1000, 1) if lat else None}


def stall(url: str, n: int) -> list[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((host, int(port)))
        s.sendall((f"GET /v1/events/export?format=csv&start=2000-01-01T00:00:00Z HTTP/1.1\r\nHost: {host}\r\n"
                   f"Authorization: Bearer {token(f'exporter-{i}')}\r\n\r\n").encode())
        socks.append(s)
    return socks


def answer_of(sock: socket.socket) -> str:
    """The status code a stalled client got ("" if none yet), peeked without reading the body."""
    try:
        head = sock.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return ""
    return head.decode(errors="replace")[9:12]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default=str(ROOT), help="checkout whose `auditlog api` is measured")
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--readers", type=int, default=20)
    ap.add_argument("--stalled", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "auditlog-bench-stalled"))
    args = ap.parse_args()

    from auditlogkit.server.broker import EmbeddedBroker, ensure_topics, free_port

    tree, data = Path(args.tree).resolve(), Path(args.data)
    load(data, args.rows)
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(tree), "status", "--porcelain"], capture_output=True,
                                text=True).stdout.strip())
    log = Path(tempfile.gettempdir()) / "auditlog-bench-stalled.log"
    with EmbeddedBroker() as broker:
        import asyncio

        asyncio.run(ensure_topics(broker.bootstrap, ["bench.audit"], 1))
        port = free_port()
        proc = serve(tree, data, broker.bootstrap, port, log)
        url = f"http://127.0.0.1:{port}"
        try:
            readers(url, args.readers, 2.0)  # warm-up
            idle = readers(url, args.readers, args.seconds)
            socks = stall(url, args.stalled)
            time.sleep(2.0)  # the exports fill every buffer and block on their clients
            answers = [answer_of(s) for s in socks]
            stalled = readers(url, args.readers, args.seconds)
            stalled["exports_open"] = sum(a == "200" for a in answers)  # streaming, never read by their clients
            stalled["exports_refused"] = sum(a == "429" for a in answers)
            stalled["exports_without_answer"] = sum(a == "" for a in answers)
            for s in socks:
                s.close()
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
    ratio = (stalled["p95_ms"] / idle["p95_ms"]) if stalled["p95_ms"] and idle["p95_ms"] else None
    result = {"tree": str(tree), "commit": commit + ("+dirty" if dirty else ""), "rows": args.rows,
              "readers": args.readers, "stalled_exports": args.stalled, "seconds": args.seconds,
              "idle": idle, "with_stalled_exports": stalled,
              "p95_ratio": round(ratio, 2) if ratio else None, "target": "p95 ratio <= 2", "machine": machine()}
    print(json.dumps(result, indent=2))
    path = Path(__file__).parent / "results" / "api_stalled.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs = runs if isinstance(runs, dict) and "runs" in runs else {"runs": []}
    runs["runs"] = [r for r in runs["runs"] if (r.get("commit"), r.get("stalled_exports")) !=
                    (result["commit"], result["stalled_exports"])] + [result]
    write_result("api_stalled", runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
