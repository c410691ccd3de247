"""Fair share: ``GET /v1/events`` p95 of one tenant, idle and while another tenant floods ``GET /v1/stats``.

Starts a Tansu broker and ``auditlog api`` (as its own process, from this checkout and, with ``--prev``, from a git
worktree of the previous commit, one after the other in the same run) on a chDB directory holding ``--rows``
events written by ClickHouse itself (nine in ten of org ``acme``, one in ten of org ``initech``). Tenant B
(``--readers`` callers of ``initech``) calls ``/v1/events?limit=50`` in a loop for ``--seconds``: first idle, then
while tenant A (one caller of ``acme``, in a process of its own) keeps ``--flood`` stats calls in flight over the
whole store (``/v1/stats?start=1970-01-01&interval=month&group_by=actor_email``; ``--stats-start`` and
``--interval`` set others, e.g. ``2000-01-01`` and ``day``: 9,800 buckets, the most a day interval allows), each
of its workers asking again as soon as it is answered (after the ``Retry-After`` of a 429). Prints per tree B's
idle and loaded p50/p95, their p95 ratio and what A got (answers by status, the stats latency alone); writes
bench/results/api_fair.json (one entry per commit, tree, stats period, interval and
``AUDITLOG_API_QUERIES_PER_CALLER``).
Target: loaded p95 within 2x of idle.

    .venv/bin/python bench/api_fair.py --prev /tmp/prev     # git worktree add /tmp/prev HEAD (before the change)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
from common import ROOT, machine, percentile, tree_pythonpath, write_result

from auditlogkit.query_api.security.auth import mint_token

SECRET = "bench-secret-0123456789abcdef0123456789"
BULK = """INSERT INTO audit_events (org_id, occurred_at, event_id, scope, category, action, status, actor_id,
actor_email, actor_type, description, received_at, kafka_topic, kafka_partition, kafka_offset)
SELECT if(number % 10 = 0, 'initech', 'acme'), now64(3) - toIntervalMillisecond(number * 50), generateUUIDv4(number),
'service', 'vm', 'vm.create', if(number % 7 = 0, 'FAILED', 'SUCCESS'), concat('u-', toString(number % 5000)),
concat('user', toString(number % 5000), '@acme.example'), 'user',
concat('created vm ', hex(sipHash64(number)), ' in a realistic sentence of about this length'), now64(3), 'bulk', 0,
number FROM numbers({n:UInt64})"""
STATS = {"group_by": "actor_email"}


def token(sub: str, org: str) -> str:
    return mint_token(SECRET, sub=sub, email=f"{sub}@{org}.example", org_id=org, role="org_owner", ttl_seconds=3600)


def load(data: Path, rows: int) -> None:
    """Fill ``data`` with ``rows`` events once (this checkout's schema; both trees read it)."""
    from auditlogkit.server.db.migrations import migrate
    from auditlogkit.server.store import Store

    store = Store(f"chdb://{data}", "auditlog")
    migrate(store)
    have = store.client().query("SELECT count() FROM audit_events").result_rows[0][0]
    if have != rows:
        store.client().command("TRUNCATE TABLE audit_events")
        store.client().command(BULK, parameters={"n": rows})
    store.close()


def serve(tree: Path, data: Path, bootstrap: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": tree_pythonpath(tree), "AUDITLOG_CLICKHOUSE_URL": f"chdb://{data}",
           "AUDITLOG_JWT_SECRET": SECRET, "AUDITLOG_KAFKA_BOOTSTRAP": bootstrap, "AUDITLOG_TOPIC": "bench.audit",
           "AUDITLOG_DATA_DIR": str(data.parent / "auditlog-bench-fair-home"),
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
    """Tenant B: ``n`` callers of ``initech`` listing their events in a loop."""
    lat: list[float] = []
    statuses: Counter[int] = Counter()
    timeouts = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def one(i: int) -> None:
        nonlocal timeouts
        h = {"Authorization": f"Bearer {token(f'reader-{i}', 'initech')}"}
        with httpx.Client(base_url=url, timeout=30) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    r = c.get("/v1/events", params={"limit": 50}, headers=h)
                except httpx.TimeoutException:
                    with lock:
                        timeouts += 1
                    continue
                took = time.perf_counter() - t0
                with lock:
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        lat.append(took)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"requests": len(lat), "not_200": sum(v for k, v in statuses.items() if k != 200), "timeouts": timeouts,
            "p50_ms": round(percentile(lat, 50) * 1000, 1) if lat else None,
            "p95_ms": round(percentile(lat, 95) * 1000, 1) if lat else None,
            "p99_ms": round(percentile(lat, 99) * 1000, 1) if lat else None}


def flood(url: str, workers: int, stop_at: float, start: str, interval: str, out: Any) -> None:
    """Tenant A (one caller of ``acme``), in a process of its own: ``workers`` stats calls always in flight."""
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    h = {"Authorization": f"Bearer {token('flooder', 'acme')}"}

    def one() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.time() < stop_at:
                try:
                    r = c.get("/v1/stats", params={**STATS, "start": start, "interval": interval}, headers=h)
                except httpx.HTTPError as exc:
                    with lock:
                        statuses[type(exc).__name__] += 1
                    continue
                with lock:
                    statuses[str(r.status_code)] += 1
                if r.status_code == 429:
                    time.sleep(min(float(r.headers.get("Retry-After", "1")), max(0.0, stop_at - time.time())))

    threads = [threading.Thread(target=one) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(dict(statuses))


def stats_alone(url: str, start: str, interval: str, n: int = 3) -> float:
    """Median seconds of one stats call of tenant A with nothing else running."""
    h = {"Authorization": f"Bearer {token('flooder', 'acme')}"}
    took = []
    with httpx.Client(base_url=url, timeout=120) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.get("/v1/stats", params={**STATS, "start": start, "interval": interval}, headers=h)
            assert r.status_code == 200, r.text[:300]
            took.append(time.perf_counter() - t0)
    return sorted(took)[len(took) // 2]


def measure(tree: Path, data: Path, bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    from auditlogkit.server.broker import free_port

    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    log = Path(tempfile.gettempdir()) / "auditlog-bench-fair.log"
    port = free_port()
    proc = serve(tree, data, bootstrap, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        readers(url, args.readers, 2.0)  # warm-up
        alone = stats_alone(url, args.stats_start, args.interval)
        idle = readers(url, args.readers, args.seconds)
        ctx = mp.get_context("spawn")
        got: mp.Queue[dict[str, int]] = ctx.Queue()
        stop_at = time.time() + args.fill + args.seconds
        flooder = ctx.Process(target=flood, args=(url, args.flood, stop_at, args.stats_start, args.interval, got))
        flooder.start()
        time.sleep(args.fill)  # every flood call sent: running, queued or refused
        loaded = readers(url, args.readers, args.seconds)
        flooder.join(args.seconds + 180)
        loaded["tenant_a_answers"] = got.get(timeout=10) if flooder.exitcode == 0 else None
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    ratio = (loaded["p95_ms"] / idle["p95_ms"]) if loaded["p95_ms"] and idle["p95_ms"] else None
    return {"tree": str(tree), "commit": commit + ("+dirty" if dirty else ""), "rows": args.rows,
            "readers": args.readers, "flood": args.flood, "stats_start": args.stats_start,
            "interval": args.interval, "seconds": args.seconds,
            "queries_per_caller": os.environ.get("AUDITLOG_API_QUERIES_PER_CALLER", "default"),
            "stats_alone_s": round(alone, 3), "idle": idle, "loaded": loaded,
            "p95_ratio": round(ratio, 2) if ratio else None, "target": "p95 ratio <= 2", "machine": machine()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default=str(ROOT), help="checkout whose `auditlog api` is measured")
    ap.add_argument("--prev", default=None, help="also measure this worktree (the previous commit), after --tree")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--readers", type=int, default=2, help="tenant B's callers")
    ap.add_argument("--flood", type=int, default=100, help="tenant A's stats calls in flight")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--stats-start", default="1970-01-01T00:00:00Z", help="start of tenant A's stats period (to now)")
    ap.add_argument("--interval", default="month",
                    help="tenant A's bucket size (1970 to now in days is refused with 422: over 10,000 buckets)")
    ap.add_argument("--fill", type=float, default=3.0, help="seconds the flood runs before B measures")
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "auditlog-bench-fair"))
    args = ap.parse_args()

    from auditlogkit.server.broker import EmbeddedBroker, ensure_topics

    data = Path(args.data)
    load(data, args.rows)
    trees = [Path(args.tree).resolve()] + ([Path(args.prev).resolve()] if args.prev else [])
    results = []
    with EmbeddedBroker() as broker:
        import asyncio

        asyncio.run(ensure_topics(broker.bootstrap, ["bench.audit"], 1))
        for tree in trees:
            results.append(measure(tree, data, broker.bootstrap, args))
            print(json.dumps(results[-1], indent=2), flush=True)
    for r in results:
        print(f"{r['commit']:>16}  idle p95 {r['idle']['p95_ms']} ms  loaded p95 {r['loaded']['p95_ms']} ms  "
              f"ratio {r['p95_ratio']}  tenant A: {r['loaded']['tenant_a_answers']}")
    path = Path(__file__).parent / "results" / "api_fair.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs = runs if isinstance(runs, dict) and "runs" in runs else {"runs": []}
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return r.get("commit"), r.get("tree"), r.get("stats_start"), r.get("interval"), r.get("queries_per_caller")

    done = {key(r) for r in results}
    runs["runs"] = [r for r in runs["runs"] if key(r) not in done] + results
    write_result("api_fair", runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
