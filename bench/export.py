"""Export throughput and memory of ``GET /v1/events/export``.

Loads ``--rows`` realistic rows (bench/query.py's generator) into its own chDB directory (reused when it already
holds them), serves the real app with uvicorn on 127.0.0.1 in this process, streams the export over HTTP to a
file and samples this process's RSS (chDB engine + API + client) every 20 ms. Prints rows/s and the peak RSS
growth over the baseline taken just before the export; then parses the file with Python's csv module and checks
that its row count equals the API's count for the same filters (``/v1/stats`` total).
Targets: >= 200k rows/s, RSS growth < 300 MB. Writes bench/results/export.json.

    .venv/bin/python bench/export.py --rows 1000000
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
import psutil
import uvicorn
from common import machine, write_result
from query import load

from auditlogkit.schemas.rows import EVENTS_TABLE


class RssSampler(threading.Thread):
    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--format", choices=("csv", "ndjson"), default="csv")
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "auditlog-bench-export"))
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "auditlog-bench-export.out"))
    args = ap.parse_args()

    from auditlogkit.query_api.core.app import create_app
    from auditlogkit.query_api.security.auth import mint_token
    from auditlogkit.server.broker import free_port
    from auditlogkit.server.db.migrations import migrate
    from auditlogkit.server.settings import Settings
    from auditlogkit.server.store import Store

    store = Store(f"chdb://{Path(args.data).resolve()}", "bench")
    migrate(store)
    c = store.client()
    now = datetime.now(UTC)
    have = int(c.query(f"SELECT count() FROM {EVENTS_TABLE}").result_rows[0][0])
    if have != args.rows:
        c.command(f"TRUNCATE TABLE {EVENTS_TABLE}")
        print(f"loading {args.rows:,} rows (one org, last 30 days) ...", flush=True)
        secs = load(c, args.rows, orgs=1, days=30, now=now)
        print(f"loaded in {secs:.1f} s", flush=True)
    settings = Settings(jwt_secret="bench-secret-0123456789abcdef0123456789", clickhouse_url=store.url,
                        clickhouse_database="bench", api_rate_per_second=0)  # latency, not the rate limit
    tok = mint_token(settings.jwt_secret or "", sub="bench", email="bench@org-00.example", org_id="org-00",
                     role="org_owner")
    headers = {"Authorization": f"Bearer {tok}"}
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, store), host="127.0.0.1", port=port,
                                           log_config=None, access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    params: dict[str, Any] = {"start": (now - timedelta(days=31)).isoformat(), "end": now.isoformat(),
                              "format": args.format}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=600) as http:
            api_count = http.get("/v1/stats", params={**params, "interval": "day"}).json()["total"]
            sampler = RssSampler()
            baseline = sampler.peak
            sampler.start()
            t0 = time.perf_counter()
            size = 0
            with http.stream("GET", "/v1/events/export", params=params) as r, open(args.out, "wb") as out:
                assert r.status_code == 200, r.read()[:300]
                for chunk in r.iter_raw(1 << 20):
                    out.write(chunk)
                    size += len(chunk)
            elapsed = time.perf_counter() - t0
            sampler.stop.set()
            sampler.join()
    finally:
        server.should_exit = True
    if args.format == "csv":
        with open(args.out, newline="", encoding="utf-8") as f:
            rows = sum(1 for _ in csv.DictReader(f))
    else:
        with open(args.out, encoding="utf-8") as f:
            rows = sum(1 for line in f if json.loads(line))
    growth_mb = (sampler.peak - baseline) / 2**20
    rate = rows / elapsed
    print(f"exported {rows:,} rows ({size / 2**20:,.0f} MiB {args.format}) in {elapsed:.2f} s = {rate:,.0f} rows/s",
          flush=True)
    print(f"RSS baseline {baseline / 2**20:,.0f} MiB, peak {sampler.peak / 2**20:,.0f} MiB, "
          f"growth {growth_mb:,.0f} MiB", flush=True)
    print(f"parsed rows {rows:,} == API count {api_count:,}: {rows == api_count}", flush=True)
    met = {"rows_per_s>=200k": rate >= 200_000, "rss_growth<300MB": growth_mb < 300, "count_matches": rows == api_count}
    print("targets met:", met)
    path = write_result("export" if args.format == "csv" else "export-ndjson", {"rows": args.rows, "format": args.format, "exported_rows": rows,
                                   "api_count": api_count, "bytes": size, "seconds": round(elapsed, 2),
                                   "rows_per_s": round(rate), "rss_baseline_mib": round(baseline / 2**20),
                                   "rss_peak_mib": round(sampler.peak / 2**20), "rss_growth_mib": round(growth_mb),
                                   "targets_met": met, "machine": machine(),
                                   "via": "uvicorn on 127.0.0.1 in-process, httpx streaming client"})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
