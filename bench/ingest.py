"""Ingest benchmark: this tree's consumer, a previous tree's and a raw aiokafka consumer side by side in one run.

One embedded broker (started here); N events (default 200k) published once to a 6-partition topic. Each
consumer then runs as a process of its own (bench/ingest_driver.py; a tree's with ``cwd`` and ``PYTHONPATH`` =
that tree, its own chDB directory): raw (``getmany`` + ``json.loads`` + ``commit``), then ``new`` (this tree) and
``prev`` (``--prev``, a worktree of an earlier commit) interleaved ``--repeat`` times, then raw again. Per run:
events/s from the first message consumed until every row is queryable (``count() FINAL`` = N; raw: until its
last message) and CPU us per event of the consumer process (chDB's threads included), of its helper processes
(decode workers) and of the broker. Figures: best rate of each consumer, least CPU per event of each (the least
disturbed run: the 2 cores are shared), ratios new CPU/event / raw CPU/msg (target <= 2.5) and new events/s /
prev events/s (target >= 2), and per tree produce -> visible p50/p95 at ``--latency-rate`` events/s (the driver
publishes to a fresh topic and polls ``audit_events_offsets`` every 20 ms). Writes ``bench/results/ingest.json``.

Run: ``.venv/bin/python bench/ingest.py [-n 200000] [--repeat 2] [--trees new,prev] [--prev /tmp/prev]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from common import ROOT, machine, tree_pythonpath, write_result

from auditlogkit.server import logs
from auditlogkit.server.broker import EmbeddedBroker, ensure_topics
from tests.factories import random_events

DRIVER = ROOT / "bench" / "ingest_driver.py"
KINDS = ("consumer_process", "helpers", "broker", "total")
TARGET_CPU_RATIO = 2.5  # new CPU per event / raw CPU per message, at most
TARGET_RATE_RATIO = 2.0  # new events/s / previous events/s, at least


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> float:
    """Publish ``values`` (acks=1) and wait for every ack: messages/s."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, acks=1, max_batch_size=1024 * 1024)
    await p.start()
    t0 = time.perf_counter()
    try:
        futs = [await p.send(topic, v) for v in values]
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    return len(values) / (time.perf_counter() - t0)


def git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=True).stdout.rstrip()


def tree_info(tree: Path) -> dict[str, Any]:
    """Commit of ``tree`` and its uncommitted changes (``git status --porcelain``; a ``.venv`` link left out)."""
    changes = [ln for ln in git(tree, "status", "--porcelain").splitlines() if ln[3:].rstrip("/") != ".venv"]
    return {"path": str(tree), "commit": git(tree, "rev-parse", "--short", "HEAD"), "dirty": bool(changes),
            "changes": changes[:30]}


def driver(tree: Path, mode: str, timeout: float, **opts: Any) -> dict[str, Any]:
    """Run bench/ingest_driver.py on ``tree``'s packages; its JSON result (with the process's wall seconds)."""
    cmd = [sys.executable, str(DRIVER), "--mode", mode, "--timeout", str(timeout)]
    for k, v in opts.items():
        cmd += [f"--{k.replace('_', '-')}" if len(k) > 1 else f"-{k}", str(v)]
    env = {**os.environ, "PYTHONPATH": tree_pythonpath(tree)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    wall = time.perf_counter() - t0
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(err.splitlines()[-20:])
        raise RuntimeError(f"driver {mode} on {tree} exited with {proc.returncode}:\n{tail}")
    res: dict[str, Any] = json.loads(lines[-1])
    for name, path in res.get("origins", {}).items():
        if not Path(path).resolve().is_relative_to(tree.resolve()):
            raise RuntimeError(f"driver on {tree} imported {name} from {path}")
    res["process_wall_s"] = round(wall, 2)
    return res


def least_cpu(runs: list[dict[str, Any]]) -> dict[str, float]:
    """CPU us per event of the run that spent the least in total (the least disturbed one)."""
    return dict(min(runs, key=lambda r: r["cpu_us_per_event"]["total"])["cpu_us_per_event"])


def main(a: argparse.Namespace) -> dict[str, Any]:
    t_begin = time.perf_counter()
    trees: dict[str, Path] = {}
    for name in a.trees.split(","):
        path = ROOT if name == "new" else Path(a.prev).resolve() if name == "prev" else None
        if path is None:
            raise SystemExit(f"--trees: unknown tree {name!r} (new, prev)")
        if not path.is_dir():
            print(f"{name}: {path} does not exist: skipped")
            continue
        trees[name] = path
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    out: dict[str, Any] = {"n": a.n, "repeat": a.repeat, "machine_before": machine(),
                           "trees": {name: tree_info(path) for name, path in trees.items()}}
    runs: dict[str, list[dict[str, Any]]] = {"raw": [], **{name: [] for name in trees}}
    try:
        with EmbeddedBroker() as broker:
            assert broker.proc is not None
            broker_opts = {"bootstrap": broker.bootstrap, "broker_pid": broker.proc.pid}
            topic = "bench.events"
            lat_topics = {name: f"bench.latency.{name}" for name in trees}
            asyncio.run(ensure_topics(broker.bootstrap, [topic, topic + ".dlq", *lat_topics.values(),
                                                         *(t + ".dlq" for t in lat_topics.values())], 6))
            values = [json.dumps(e).encode() for e in random_events(a.n, seed=1)]
            out["message_bytes_avg"] = round(sum(map(len, values)) / a.n)
            out["produce_rate"] = round(asyncio.run(produce(broker.bootstrap, topic, values)))
            del values
            print(f"published {a.n} events ({out['message_bytes_avg']} B avg) at {out['produce_rate']} events/s; "
                  f"trees: " + ", ".join(f"{k} {v['commit']}{' +dirty' if v['dirty'] else ''}"
                                         for k, v in out["trees"].items()))

            def run_raw() -> None:
                r = driver(ROOT, "raw", a.timeout, topic=topic, n=a.n, **broker_opts)
                runs["raw"].append(r)
                print(f"  raw   {r['rate']:>7} ev/s  CPU us/ev {r['cpu_us_per_event']}")

            run_raw()
            for i in range(a.repeat):  # interleaved: the CPU is shared, load drifts
                for name, path in trees.items():
                    chdb = tmp / f"{name}-{i}" / "chdb"
                    chdb.parent.mkdir()
                    r = driver(path, "consume", a.timeout, topic=topic, dlq_topic=topic + ".dlq",
                               chdb_dir=chdb, n=a.n, **broker_opts)
                    shutil.rmtree(chdb.parent, ignore_errors=True)
                    runs[name].append(r)
                    print(f"  {name:<5} {r['rate']:>7} ev/s  CPU us/ev {r['cpu_us_per_event']}  "
                          f"({r['helper_processes']} helpers)")
            run_raw()

            lat_file = tmp / "latency.jsonl"
            lat_n = int(a.latency_rate * a.latency_seconds)
            lat_file.write_bytes(b"\n".join(json.dumps(e).encode() for e in random_events(lat_n, seed=2)) + b"\n")
            latency: dict[str, Any] = {}
            for name, path in trees.items():
                chdb = tmp / f"{name}-latency" / "chdb"
                chdb.parent.mkdir()
                latency[name] = driver(path, "latency", a.timeout, topic=lat_topics[name],
                                       dlq_topic=lat_topics[name] + ".dlq", chdb_dir=chdb, values=lat_file,
                                       rate=a.latency_rate, **broker_opts)
                shutil.rmtree(chdb.parent, ignore_errors=True)
                print(f"  {name:<5} produce->visible p50 {latency[name]['p50_ms']} ms, "
                      f"p95 {latency[name]['p95_ms']} ms at {a.latency_rate} ev/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    best_rate = {k: max(r["rate"] for r in v) for k, v in runs.items()}
    cpu = {k: least_cpu(v) for k, v in runs.items()}
    raw_total = cpu["raw"]["total"]
    out["runs"] = runs
    out["best_rate"] = best_rate
    out["rate_from_start_best"] = {k: max(r["rate_from_start"] for r in v) for k, v in runs.items()}
    out["cpu_us_per_event"] = cpu
    out["breakdown_x_raw_total"] = {k: {kind: round(c[kind] / raw_total, 2) for kind in KINDS}
                                    for k, c in cpu.items()}
    ratios: dict[str, Any] = {}
    for name in trees:
        ratios[f"{name}_cpu_per_event_over_raw"] = round(cpu[name]["total"] / raw_total, 2)
        ratios[f"{name}_rate_over_raw"] = round(best_rate[name] / best_rate["raw"], 3)
    if "new" in trees and "prev" in trees:
        ratios["new_rate_over_prev"] = round(best_rate["new"] / best_rate["prev"], 3)
    ratios["targets"] = {"new_cpu_per_event_over_raw_max": TARGET_CPU_RATIO,
                         "new_rate_over_prev_min": TARGET_RATE_RATIO}
    out["ratios"] = ratios
    out["latency"] = latency
    out["machine_after"] = machine()
    out["seconds_total"] = round(time.perf_counter() - t_begin, 1)
    return out


def report(res: dict[str, Any], path: Path) -> None:
    raw_total = res["cpu_us_per_event"]["raw"]["total"]
    print(f"\n{'consumer':<9}{'commit':<17}{'ev/s (runs)':<24}{'best':>8}  "
          f"{'CPU us/event: process':>22}{'helpers':>9}{'broker':>8}{'total':>8}{'x raw':>7}  {'p50/p95 ms':>15}")
    for name, runs in res["runs"].items():
        t = res["trees"].get(name)
        commit = f"{t['commit']}{'+dirty' if t['dirty'] else ''}" if t else "-"
        c = res["cpu_us_per_event"][name]
        lat = res["latency"].get(name)
        lat_s = f"{lat['p50_ms']}/{lat['p95_ms']}" if lat else "-"
        print(f"{name:<9}{commit:<17}{', '.join(str(r['rate']) for r in runs):<24}{res['best_rate'][name]:>8}  "
              f"{c['consumer_process']:>22}{c['helpers']:>9}{c['broker']:>8}{c['total']:>8}"
              f"{c['total'] / raw_total:>7.2f}  {lat_s:>15}")
    r = res["ratios"]
    if "new_cpu_per_event_over_raw" in r:
        print(f"new CPU/event / raw CPU/msg = {r['new_cpu_per_event_over_raw']} (target <= {TARGET_CPU_RATIO})")
    if "new_rate_over_prev" in r:
        print(f"new events/s / prev events/s = {r['new_rate_over_prev']} (target >= {TARGET_RATE_RATIO})")
    print(f"load average {res['machine_before']['loadavg_1m']} -> {res['machine_after']['loadavg_1m']} "
          f"on {res['machine_before']['cpus']} CPUs; {res['seconds_total']} s; written {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200_000, help="events to publish [200000]")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each tree's consumer, interleaved [2]")
    ap.add_argument("--trees", default="new,prev", help="consumers to measure beside raw: new, prev [new,prev]")
    ap.add_argument("--prev", default="/tmp/prev", help="worktree of the previous commit [/tmp/prev]")
    ap.add_argument("--latency-rate", type=int, default=5_000, help="events/s of the latency phase [5000]")
    ap.add_argument("--latency-seconds", type=float, default=6.0, help="length of the latency phase [6]")
    ap.add_argument("--timeout", type=float, default=600.0, help="most seconds of one consumer run [600]")
    args = ap.parse_args()
    logs.configure("warning")
    res = main(args)
    report(res, write_result("ingest", res))
