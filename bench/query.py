"""Query latency of the read API on 10M realistic rows.

Generates realistic ``audit_events`` rows fast (numpy + Arrow, no per-event validation) and inserts them straight
into ClickHouse in its own chDB directory (``--data``; reused when it already holds ``--rows`` rows), then calls
the real app in-process (FastAPI TestClient: routing, auth, scoping, SQL, JSON) and prints p50/p95 of:
default page, 7-day + category page, keyword search, autocomplete, stats per day over 30 days.
Targets: p95 <= 50 ms page, <= 300 ms keyword search, <= 50 ms autocomplete. Writes bench/results/query.json.

Data shape: ``orgs`` tenants with skewed sizes (``org-00`` holds ~25 % of the rows: the org queried), 5 workspaces
each, 150 users each, every catalog action weighted towards reads and sign-ins, ~8 % FAILED, IPv4/IPv6, user
agents, unique target ids/names, description = label + target name, a small detail JSON, ``occurred_at``
uniform over the last ``--days`` days. ``--arrival time`` (the default) inserts the batches oldest first, as the
consumer stores events in production (each part then holds a stretch of time); ``random`` spreads every batch over
the whole period (every part then spans it, which makes "the newest 50" read every part). After a load the merges
are left to finish before measuring.

    .venv/bin/python bench/query.py --rows 10000000        # full size (load ~2-3 min on 2 cores)
    .venv/bin/python bench/query.py --rows 200000 --repeat 20   # quick
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from common import machine, percentile, write_result

from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.rows import EVENT_COLUMNS, EVENTS_TABLE

FIRST = ["kim", "lee", "park", "choi", "jung", "kang", "cho", "yoon", "jang", "lim", "han", "oh", "seo", "shin",
         "kwon", "hwang", "ahn", "song", "ryu", "hong", "alice", "bob", "carol", "dave", "erin", "frank"]
LAST = ["minho", "jisoo", "yuna", "hyun", "sora", "taeyang", "smith", "jones", "brown", "miller", "garcia"]
UAS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "python-requests/2.32.3", "gpucloud-cli/1.8.2", "terraform-provider-gpucloud/0.9.1", "Go-http-client/2.0",
]
DETAILS = [
    '{"request":{"region":"kr-central-1","flavor":"a100.4x"}}',
    '{"before":{"state":"running"},"after":{"state":"stopped"}}',
    '{"before":{"quota":8},"after":{"quota":16},"reason":"training run"}',
    '{"request":{"policy":"ReadOnly","principal":"u-17"}}',
    '{"mfa":"otp","attempt":3}',
]
HEAVY = {"sign_in.success": 12.0, "vm.list": 10.0, "vm.read": 8.0, "storage.list": 6.0, "session.refresh": 8.0,
         "notice.read": 3.0, "sign_in.password_failure": 2.0, "sign_in.otp_failure": 1.0}
FAILURES = {"sign_in.password_failure", "sign_in.otp_failure", "sign_in.attempts_exceeded"}


def _take(pool: list[str], idx: np.ndarray) -> pa.Array:
    return pa.array(pool, pa.string()).take(pa.array(idx))


def generate(n: int, *, seed: int = 1, orgs: int = 20, days: int = 90, now: datetime | None = None,
             start_index: int = 0, span: tuple[float, float] = (0.0, 1.0)) -> pa.Table:
    """``n`` rows as an Arrow table with the columns of ``EVENT_COLUMNS`` (event_id as string); ``occurred_at``
    uniform in the ``span`` of the ``days`` (0 the oldest moment, 1 now)."""
    rng = np.random.default_rng(seed)
    now = now or datetime.now(UTC)
    cat = get_catalog()
    triples = cat.all_actions()
    w = np.array([HEAVY.get(a, 1.0) for _, _, a in triples])
    ti = rng.choice(len(triples), size=n, p=w / w.sum())
    scopes = [s for s, _, _ in triples]
    cats = [c for _, c, _ in triples]
    acts = [a for _, _, a in triples]
    org_w = 1.0 / np.arange(1, orgs + 1) ** 0.9
    if orgs > 1:
        org_w[0] = org_w[1:].sum() / 3  # first org ~25 %
    oi = rng.choice(orgs, size=n, p=org_w / org_w.sum())
    org_names = [f"org-{i:02d}" for i in range(orgs)]
    ws_i = rng.integers(0, 5, size=n)
    ws_pool = [f"{o}-ws{j}" for o in org_names for j in range(5)]
    ws = _take(ws_pool, oi * 5 + ws_i)
    no_ws = np.isin(np.array(scopes)[ti], ["organization", "authentication", "billing"])
    ws = pc.if_else(pa.array(no_ws), pa.nulls(n, pa.string()), ws)
    users = 150
    ui = rng.integers(0, users, size=n)
    email_pool = [f"{FIRST[u % len(FIRST)]}.{LAST[(u // len(FIRST)) % len(LAST)]}{u}@{o}.example"
                  for o in org_names for u in range(users)]
    uid_pool = [f"u-{o[-2:]}{u:04d}" for o in org_names for u in range(users)]
    emails = _take(email_pool, oi * users + ui)
    actor_ids = _take(uid_pool, oi * users + ui)
    ip_pool = [f"198.51.{u % 200}.{(u * 7) % 250 + 1}" for u in range(users * 2)] + \
              [f"2001:db8:{u:x}::{(u * 13) % 999:x}" for u in range(users)]
    ips = _take(ip_pool, (ui * 3 + rng.integers(0, 3, size=n)) % len(ip_pool))
    uas = _take(UAS, rng.integers(0, len(UAS), size=n))
    act_arr = np.array(acts)[ti]
    fail = np.isin(act_arr, list(FAILURES)) | (rng.random(n) < 0.08)
    status = pa.array(np.where(fail, "FAILED", "SUCCESS"))
    seq = pa.array(np.arange(start_index, start_index + n)).cast(pa.string())
    tcat = _take(cats, ti)
    tid = pc.binary_join_element_wise(tcat, seq, "-")
    tname = pc.binary_join_element_wise(tcat, pa.repeat("name", n), seq, "-")
    labels = _take([cat.action_label(s, a) for s, _, a in triples], ti)
    desc = pc.binary_join_element_wise(labels, tname, " ")
    details = _take(DETAILS, rng.integers(0, len(DETAILS), size=n))
    oldest = days * 86_400_000
    secs = rng.integers(60_000 + int((1 - span[1]) * (oldest - 60_000)), 60_000 + int((1 - span[0]) * (oldest - 60_000)),
                        size=n)
    occurred = pa.array((np.datetime64(now.replace(tzinfo=None), "ms") - secs.astype("timedelta64[ms]")),
                        pa.timestamp("ms", tz="UTC"))
    received = pc.add(occurred, pa.scalar(timedelta(milliseconds=150)))
    ids = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64).view(np.uint64)
    eids = pa.array([str(uuid.UUID(int=(int(h) << 64) | int(lo), version=4)) for h, lo in ids])
    cols: dict[str, Any] = {
        "org_id": _take(org_names, oi), "occurred_at": occurred, "event_id": eids,
        "schema_version": pa.array(np.ones(n, dtype=np.uint8)), "workspace_id": ws,
        "scope": _take(scopes, ti), "category": tcat, "action": _take(acts, ti), "status": status,
        "actor_id": actor_ids, "actor_email": emails, "actor_type": pa.repeat("user", n),
        "actor_ip": ips, "actor_user_agent": uas, "target_type": tcat, "target_id": tid, "target_name": tname,
        "description": desc, "detail": details, "source": _take(["compute-api", "iam", "billing", "console"],
                                                                    rng.integers(0, 4, size=n)),
        "request_id": pc.binary_join_element_wise(pa.repeat("req", n), seq, "-"),
        "received_at": received, "kafka_topic": pa.repeat("audit.events", n),
        "kafka_partition": pa.array(rng.integers(0, 6, size=n).astype(np.uint32)),
        "kafka_offset": pa.array(np.arange(start_index, start_index + n, dtype=np.uint64)),
        # one in five over HTTP ingest (a service token's sub), the rest from Kafka producers without a principal
        "publisher_via": pa.array(np.where(secs % 5 == 0, "http", "kafka")),
        "publisher_id": pc.if_else(pa.array(secs % 5 == 0), _take(["svc-compute", "svc-iam", "svc-billing"],
                                                                       secs % 3), pa.nulls(n, pa.string())),
    }
    return pa.table({k: cols[k] for k in EVENT_COLUMNS})


def arrival_span(done: int, k: int, n: int, arrival: str) -> tuple[float, float]:
    """The part of the period a batch's rows fall in: ``time``, the order events arrive in production (batch by
    batch, oldest first); ``random``, anywhere (every part of the store then spans the whole period)."""
    return (done / n, (done + k) / n) if arrival == "time" else (0.0, 1.0)


def load(client: Any, n: int, *, batch: int = 500_000, seed: int = 1, orgs: int = 20, days: int = 90,
         now: datetime | None = None, table: str = EVENTS_TABLE, arrival: str = "time") -> float:
    """Generate and insert ``n`` rows in batches (in ``arrival`` order: :func:`arrival_span`); returns the seconds
    taken."""
    t0 = time.perf_counter()
    now = now or datetime.now(UTC)
    done = 0
    while done < n:
        k = min(batch, n - done)
        client.insert_arrow(table, generate(k, seed=seed + done, orgs=orgs, days=days, now=now, start_index=done,
                                            span=arrival_span(done, k, n, arrival)))
        done += k
    return time.perf_counter() - t0


def settle(client: Any, database: str, table: str = EVENTS_TABLE, timeout: float = 600.0) -> dict[str, Any]:
    """Wait until the background merges of every table of ``database`` are done (none for 3 s: the aggregates
    that the views fill are merged too); the active parts of ``table`` and of the actors' aggregate then."""
    t0 = time.perf_counter()
    quiet_since = None
    while time.perf_counter() - t0 < timeout:
        busy = int(client.query("SELECT count() FROM system.merges WHERE database = {d:String}",
                                parameters={"d": database}).result_rows[0][0])
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.perf_counter()
        elif time.perf_counter() - quiet_since >= 3:
            break
        time.sleep(0.5)
    def parts(t: str) -> int:
        return int(client.query("SELECT count() FROM system.parts WHERE database = {d:String} AND table = {t:String} "
                                "AND active", parameters={"d": database, "t": t}).result_rows[0][0])

    return {"settle_s": round(time.perf_counter() - t0, 1), "active_parts": parts(table),
            "actors_parts": parts("audit_actors")}


# ----- the measured queries ------------------------------------------------------------------------------------
def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def measure(client: Any, headers: dict[str, str], repeat: int, now: datetime) -> dict[str, Any]:
    rng = random.Random(7)
    week = {"start": _iso(now - timedelta(days=7)), "end": _iso(now)}
    month = {"start": _iso(now - timedelta(days=30)), "end": _iso(now)}
    cats = [c for s in get_catalog().scopes.values() for c in s.categories if s.code == "service"]
    terms = ["name-1234", "kim", "delete", "a100", "policy", "vm-99", "Password Failure", "org-00-ws3", "token"]
    prefixes = ["ki", "le", "pa", "ch", "al", "bo", "seo", "hong.s"]
    cases: dict[str, Any] = {
        "default_page": lambda: ("/v1/events", {}),
        "page_7d_category": lambda: ("/v1/events", {**week, "scope": "service", "category": rng.choice(cats)}),
        "keyword_search": lambda: ("/v1/events", {"q": rng.choice(terms)}),
        "keyword_search_30d": lambda: ("/v1/events", {**month, "q": rng.choice(terms)}),
        "autocomplete": lambda: ("/v1/actors", {"prefix": rng.choice(prefixes)}),
        "stats_day_30d": lambda: ("/v1/stats", {**month, "interval": "day"}),
        "page_2_via_cursor": None,
    }
    out: dict[str, Any] = {}
    for name, make in cases.items():
        times = []
        for i in range(repeat + 2):  # two warm-ups
            if make is None:
                first = client.get("/v1/events", headers=headers).json()
                path, params = "/v1/events", {"cursor": first["next_cursor"]}
            else:
                path, params = make()
            t0 = time.perf_counter()
            r = client.get(path, params=params, headers=headers)
            dt = (time.perf_counter() - t0) * 1000
            assert r.status_code == 200, (name, r.text[:300])
            if i >= 2:
                times.append(dt)
        out[name] = {"p50_ms": round(percentile(times, 50), 1), "p95_ms": round(percentile(times, 95), 1),
                     "max_ms": round(max(times), 1), "n": len(times)}
        print(f"{name:22s} p50 {out[name]['p50_ms']:7.1f} ms   p95 {out[name]['p95_ms']:7.1f} ms", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--orgs", type=int, default=20)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--arrival", choices=("time", "random"), default="time",
                    help="rows inserted oldest first, as production stores them [time], or in random time order")
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "auditlog-bench-query"),
                    help="chDB directory of the bench (reused if it holds --rows rows)")
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from auditlogkit.query_api.core.app import create_app
    from auditlogkit.query_api.security.auth import mint_token
    from auditlogkit.server.db.migrations import migrate
    from auditlogkit.server.settings import Settings
    from auditlogkit.server.store import Store

    store = Store(f"chdb://{Path(args.data).resolve()}", "bench")
    migrate(store)
    c = store.client()
    have = int(c.query(f"SELECT count() FROM {EVENTS_TABLE}").result_rows[0][0])
    load_s = None
    marker = Path(args.data) / "arrival.txt"
    if have != args.rows or not marker.exists() or marker.read_text() != args.arrival:
        c.command(f"TRUNCATE TABLE {EVENTS_TABLE}")
        c.command("TRUNCATE TABLE audit_actors")
        print(f"loading {args.rows:,} rows into {args.data} ...", flush=True)
        load_s = load(c, args.rows, orgs=args.orgs, days=args.days, arrival=args.arrival)
        marker.write_text(args.arrival)
        print(f"loaded in {load_s:.1f} s ({args.rows / load_s:,.0f} rows/s); merges: {settle(c, 'bench')}", flush=True)
    parts = int(c.query("SELECT count() FROM system.parts WHERE database = 'bench' AND table = {t:String} "
                        "AND active", parameters={"t": EVENTS_TABLE}).result_rows[0][0])
    now = datetime.now(UTC)
    org = "org-00"
    org_rows = int(c.query(f"SELECT count() FROM {EVENTS_TABLE} WHERE org_id = {{o:String}}",
                           parameters={"o": org}).result_rows[0][0])
    print(f"{have if load_s is None else args.rows:,} rows, {parts} parts; {org} holds {org_rows:,}", flush=True)
    settings = Settings(jwt_secret="bench-secret-0123456789abcdef0123456789", clickhouse_url=store.url,
                        clickhouse_database="bench", api_rate_per_second=0)  # latency, not the rate limit
    tok = mint_token(settings.jwt_secret or "", sub="bench", email="bench@org-00.example", org_id=org,
                     role="org_owner")
    with TestClient(create_app(settings, store)) as client:
        headers = {"Authorization": f"Bearer {tok}"}
        t0 = time.perf_counter()
        assert client.get("/v1/events", headers=headers).status_code == 200  # the org's first page: ClickHouse's
        first_page_ms = round((time.perf_counter() - t0) * 1000, 1)
        window = client.app.state.page_window  # type: ignore[attr-defined]
        if window is not None:
            window.settle()  # its page window filled meanwhile: what every later page of a browsing user meets
        print(f"first page {first_page_ms} ms; page window filled after {(time.perf_counter() - t0) * 1000:.0f} ms",
              flush=True)
        results = measure(client, headers, args.repeat, now)
        results["first_page"] = {"ms": first_page_ms}
    targets = {"default_page": 50, "page_7d_category": 50, "keyword_search": 300, "autocomplete": 50}
    verdict = {k: results[k]["p95_ms"] <= v for k, v in targets.items()}
    print("targets met:", verdict, flush=True)
    path = write_result("query", {"rows": args.rows, "arrival": args.arrival, "orgs": args.orgs, "days": args.days, "queried_org": org,
                                  "queried_org_rows": org_rows, "active_parts": parts, "load_seconds": load_s,
                                  "results": results, "targets_p95_ms": targets, "targets_met": verdict,
                                  "machine": machine(), "via": "in-process FastAPI TestClient (auth+SQL+JSON)"})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
