"""The page window: the newest stored events of the organizations whose pages are read, held in memory.

Contract of :class:`PageWindow`:
- per organization, once a page of it was asked for, it holds every stored row whose key (occurred_at, event_id)
  is at or above the org's floor (the key of the oldest row it keeps), each once; an org with fewer stored rows
  than ``rows_per_org`` has no floor. The rows are those :func:`~auditlogkit.query_api.read.events.list_page`
  selects (the detail capped at ``detail_max`` bytes);
- :meth:`PageWindow.page` answers a list page exactly as ``list_page`` would (the same events in the same order,
  ClickHouse's order of UUIDs included, and the same next position), or None when it cannot, and the caller asks
  ClickHouse: a filter without a row test (a non-ASCII keyword), a page reaching below the floor or before the
  retention, a page larger than the window, another detail cap;
- it never answers from a stale window: before each answer it reads the rows stored since its last look, from
  the parts whose block numbers are newer than the newest it has seen (ClickHouse numbers blocks as they are
  committed). Whether anything was stored is, on the embedded engine, whether the table's directory changed (a
  ``stat``, no query) once that directory has been still for :data:`SETTLED_SECONDS`; else one query of
  ``system.parts``;
- an organization's first page is ClickHouse's: its fill (the newest ``rows_per_org`` rows, ~0.2 s at 10M rows)
  runs on the window's own thread meanwhile (``background``; without it the first page waits for the fill);
- memory is bounded: the rows held are estimated at most ``max_bytes`` (:func:`row_bytes`); the organizations read
  least recently go first;
- it only serves a plain (Replacing)MergeTree table: block numbers of replicated or distributed tables are not one
  sequence (:func:`watch`, at its first page; then it declines every page).
Thread-safe: one lock orders the looks and the answers (an answer is tens of microseconds of Python); a fill reads
without it and joins under it, catching up with what was stored meanwhile.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from auditlogkit.query_api.read.event_shape import select_list
from auditlogkit.query_api.read.events import ORDER, list_page, public_row, utc_row
from auditlogkit.query_api.read.filters import SEARCH_TEXT, EventFilters, RowTest, ms, search_text
from auditlogkit.query_api.security.principal import Principal
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.schemas.tables import EVENTS_TABLE
from auditlogkit.server.logs import get_logger
from auditlogkit.server.store import Store

log = get_logger("auditlogkit.query_api.read.recent")

SETTLED_SECONDS = 1.0
"""A directory reading is trusted once its last change is this old (kernel timestamps are coarse: two changes in
one tick look like one, and a part is committed just after its directory is renamed)."""
_MASK64 = (1 << 64) - 1
Key = tuple[datetime, tuple[int, int]]
_TOP = (_MASK64, _MASK64)
_BLOCK = "toUInt64(splitByChar('_', _part)[3])"  # a part's newest block number, from its name
_PUBLIC = "public"  # a held row's API event once served: (the catalog it was labelled with, the event)
MAX_PENDING_FILLS = 16
ROW_OVERHEAD = 1700
"""Bytes of a held row besides its text: the dict, its datetimes, UUID and small values (measured in
bench/query_vs_postgres.py's page window figures)."""


def row_bytes(row: Mapping[str, Any]) -> int:
    """The estimated memory of a held row."""
    return ROW_OVERHEAD * (2 if _PUBLIC in row else 1) + sum(len(v) for v in row.values() if isinstance(v, str))


def _both(a: RowTest, b: RowTest) -> RowTest:
    return lambda row: a(row) and b(row)


def key_of(occurred_at: datetime, event_id: uuid.UUID) -> Key:
    """The sort key of ``ORDER BY occurred_at, event_id`` in ClickHouse, which compares a UUID's second half
    first."""
    n = event_id.int
    return occurred_at, (n & _MASK64, n >> 64)


@dataclass(slots=True)
class _Org:
    keys: list[Key] = field(default_factory=list)  # ascending
    rows: list[dict[str, Any]] = field(default_factory=list)  # in the order of keys
    floor: Key | None = None  # complete for keys >= floor; None: complete
    size: int = 0  # estimated bytes (row_bytes)
    block: int = 0  # every part up to this block number is in

    def add(self, row: dict[str, Any]) -> None:
        k = key_of(row["occurred_at"], row["event_id"])
        if self.floor is not None and k < self.floor:
            return
        row[SEARCH_TEXT] = search_text(row)  # the keyword's haystack, made once
        i = bisect.bisect_left(self.keys, k)
        if i < len(self.keys) and self.keys[i] == k:  # a re-sent copy: same content, a later receipt
            if row["received_at"] > self.rows[i]["received_at"]:
                self.size += row_bytes(row) - row_bytes(self.rows[i])
                self.rows[i] = row  # the copy ReplacingMergeTree keeps
            return
        self.keys.insert(i, k)
        self.rows.insert(i, row)
        self.size += row_bytes(row)

    def trim(self, keep: int) -> None:
        """Keep the ``keep`` newest rows; the floor rises to the oldest kept."""
        cut = len(self.keys) - keep
        if cut <= 0:
            return
        self.size -= sum(row_bytes(r) for r in self.rows[:cut])
        del self.keys[:cut], self.rows[:cut]
        self.floor = self.keys[0] if self.keys else None


class TableChanges:
    """Whether the embedded table's directories changed: a reading is their modification times."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def reading(self) -> tuple[tuple[int, ...], bool] | None:
        """(the times, whether they can be trusted later: the newest change is :data:`SETTLED_SECONDS` old, so an
        equal reading then means nothing changed), or None when a directory cannot be read."""
        try:
            times = tuple(os.stat(p).st_mtime_ns for p in self.paths)
        except OSError:
            return None
        return times, time.time() - max(times) / 1e9 > SETTLED_SECONDS


class PageWindow:
    """The newest rows of the organizations read (module contract)."""

    def __init__(self, store: Store, *, rows_per_org: int, max_bytes: int, detail_max: int, retention_days: int,
                 background: bool = True, limits: Mapping[str, str] | None = None) -> None:
        """``limits``: ClickHouse settings of the background fills (the API's query time and memory limits; a
        request's own queries carry its query thread's)."""
        self.store = store
        self.limits = dict(limits or {})
        # An org's first page is ClickHouse's while its fill runs here (else that page would wait for the fill).
        self._filler = (ThreadPoolExecutor(1, thread_name_prefix="page-window", initializer=self._limit_filler)
                        if background else None)
        self._filling: dict[str, Future[None]] = {}
        self.rows_per_org = rows_per_org
        self.max_bytes = max_bytes
        self.detail_max = detail_max
        self.retention = timedelta(days=retention_days)
        self.changes: TableChanges | None = None
        self._serves: bool | None = None  # None: not looked at the table yet (watch)
        self._orgs: OrderedDict[str, _Org] = OrderedDict()
        self._settled: tuple[int, ...] | None = None  # a trusted directory reading taken at the last look
        self._looked_at = 0.0  # monotonic start of the last completed look
        self._lock = threading.Lock()
        self.stats = {"served": 0, "declined": 0, "fills": 0, "looks": 0, "queries": 0}

    @property
    def held_bytes(self) -> int:
        return sum(o.size for o in self._orgs.values())

    @property
    def held_rows(self) -> int:
        return sum(len(o.keys) for o in self._orgs.values())

    # ----- answering ------------------------------------------------------------------------------------------
    def page(self, principal: Principal, filters: EventFilters, catalog: Catalog, limit: int,
             after: tuple[datetime, uuid.UUID] | None, detail_max: int | None, now: datetime
             ) -> tuple[list[dict[str, Any]], tuple[datetime, uuid.UUID] | None] | None:
        """The page ``list_page`` would return for this caller, filters and position, or None (module contract)."""
        asked = time.monotonic()
        tests = filters.row_tests(catalog, skip=("start", "end"))  # the scan's bounds
        start = ms(filters.start)
        if (tests is None or detail_max != self.detail_max or limit >= self.rows_per_org
                or start < now - self.retention):
            self.stats["declined"] += 1
            return None
        if not principal.is_owner:
            seen = frozenset(w for w in principal.workspaces if w)
            tests.append(lambda row: row["workspace_id"] in seen)
        with self._lock:
            if self._serves is None:
                self._serves, self.changes = watch(self.store)
            if not self._serves:
                self.stats["declined"] += 1
                return None
            self._look(asked)
            if principal.org_id in self._orgs:
                return self._serve(principal.org_id, catalog, tests, start, ms(filters.end), after, limit)
            if self._filler is not None:
                if principal.org_id not in self._filling and len(self._filling) < MAX_PENDING_FILLS:
                    self._filling[principal.org_id] = self._filler.submit(self._fill_in, principal.org_id)
                self.stats["declined"] += 1
                return None
        fresh = self._fill(principal.org_id)  # without the lock: other orgs' pages go on meanwhile
        with self._lock:
            if principal.org_id not in self._orgs:
                self._orgs[principal.org_id] = fresh
                self._read_since([principal.org_id])  # what was stored while it filled
            return self._serve(principal.org_id, catalog, tests, start, ms(filters.end), after, limit)

    def _serve(self, org_id: str, catalog: Catalog, tests: list[RowTest], start: datetime, end: datetime,
               after: tuple[datetime, uuid.UUID] | None, limit: int
               ) -> tuple[list[dict[str, Any]], tuple[datetime, uuid.UUID] | None] | None:
        """The page from a held org that is up to date (lock held); None: it is not held or the page is not in it."""
        org = self._orgs.get(org_id)
        found = self._scan(org, tests, start, end, after, limit + 1) if org is not None else None
        if org is None or found is None:
            self.stats["declined"] += 1
            return None
        self._orgs.move_to_end(org_id)
        self.stats["served"] += 1
        more = len(found) > limit
        found = found[:limit]
        data = [self._public(org, r, catalog) for r in found]
        self._evict()  # the events made count too
        last = (found[-1]["occurred_at"], found[-1]["event_id"]) if more and found else None
        return data, last

    @staticmethod
    def _public(org: _Org, row: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
        """The row's API event (``public_row``), made once per row and catalog and kept with it (read-only)."""
        made = row.get(_PUBLIC)
        if made is None or made[0] is not catalog:
            if made is None:
                org.size += ROW_OVERHEAD
            made = (catalog, public_row(dict(row), catalog))
            row[_PUBLIC] = made
        return made[1]

    @staticmethod
    def _scan(org: _Org, tests: list[RowTest], start: datetime, end: datetime,
              after: tuple[datetime, uuid.UUID] | None, want: int) -> list[dict[str, Any]] | None:
        hi = bisect.bisect_right(org.keys, (end, _TOP))
        if after is not None:
            hi = min(hi, bisect.bisect_left(org.keys, key_of(*after)))
        lo = bisect.bisect_left(org.keys, (start, (0, 0)))  # rows below lo are older than start
        newest_first = reversed(org.rows[lo:hi]) if lo < hi else iter(())
        matching = filter(functools.reduce(_both, tests), newest_first) if tests else newest_first
        found = list(itertools.islice(matching, want))
        if len(found) == want or lo > 0 or org.floor is None or start > org.floor[0]:
            return found  # a full page, or every row of the range is held (an older one is, or none is older)
        return None  # older matching rows may lie below the floor

    # ----- keeping up with the store ----------------------------------------------------------------------------
    def _look(self, asked: float) -> None:
        """Bring every held org up to date with what was stored before ``asked`` (lock held)."""
        if self._looked_at >= asked:
            return  # a look that began after this request arrived
        began = time.monotonic()
        reading = self.changes.reading() if self.changes is not None else None
        if reading is not None and self._settled is not None and reading[0] == self._settled:
            return
        self.stats["looks"] += 1
        if self._orgs:
            self._read_since(list(self._orgs))
        self._settled = reading[0] if reading is not None and reading[1] else None
        self._looked_at = began

    def _newest_block(self) -> int:
        self.stats["queries"] += 1
        rows = self.store.client().query(
            "SELECT max(max_block_number) FROM system.parts WHERE database = {db:String} AND table = {t:String} "
            "AND active", parameters={"db": self.store.database, "t": EVENTS_TABLE}).result_rows
        return int(rows[0][0] or 0) if rows else 0

    def _select(self, where: str, params: Mapping[str, Any], tail: str) -> list[dict[str, Any]]:
        self.stats["queries"] += 1
        sql = f"SELECT {select_list(cap_detail=True)} FROM {EVENTS_TABLE} WHERE {where} {tail}"
        result = self.store.client().query(sql, parameters={**params, "d_max": self.detail_max})
        return [utc_row(r) for r in result.named_results()]

    def _read_since(self, org_ids: list[str]) -> None:
        """Bring these held orgs up to the newest block: their rows from the parts newer than their own block
        (lock held)."""
        newest = self._newest_block()
        behind = [(o, self._orgs[o]) for o in org_ids if self._orgs[o].block < newest]
        if not behind:
            return
        # A part merged from new and old blocks holds old rows too: read none below an org's floor.
        ranges: list[str] = []
        params: dict[str, Any] = {}
        for i, (o, held) in enumerate(behind):
            cond = f"org_id = {{o{i}:String}} AND {_BLOCK} > {{b{i}:UInt64}}"
            params[f"o{i}"], params[f"b{i}"] = o, held.block
            if held.floor is not None:
                cond += f" AND occurred_at >= {{f{i}:DateTime64(3, 'UTC')}}"
                params[f"f{i}"] = held.floor[0]
            ranges.append(f"({cond})")
        cap = 4 * self.rows_per_org * len(behind)  # the held rows again (merged parts) and as many new ones
        rows = self._select(" OR ".join(ranges), {**params, "cap": cap + 1}, "LIMIT {cap:UInt32}")
        if len(rows) > cap:  # more new rows than the window holds: those orgs start again from the store
            log.info("page_window.dropped", reason="burst", rows=len(rows), orgs=len(behind))
            for o, _ in behind:
                del self._orgs[o]
            return
        for r in rows:
            self._orgs[r["org_id"]].add(r)
        for _, held in behind:
            held.block = newest
            if len(held.keys) > 2 * self.rows_per_org:
                held.trim(self.rows_per_org)
        self._evict()

    def _limit_filler(self) -> None:
        client = self.store.client()  # the filler thread's own
        for k, v in self.limits.items():
            client.set_client_setting(k, v)

    def _fill_in(self, org_id: str) -> None:
        """Fill ``org_id`` and let it join (the background filler's task)."""
        try:
            fresh = self._fill(org_id)
            with self._lock:
                if org_id not in self._orgs:
                    self._orgs[org_id] = fresh
                    self._read_since([org_id])  # what was stored while it filled
        except Exception as exc:  # the org's pages stay ClickHouse's; its next page tries again
            log.warning("page_window.fill_failed", org_id=org_id, error=str(exc).splitlines()[0][:300])
        finally:
            with self._lock:
                self._filling.pop(org_id, None)

    def settle(self) -> None:
        """Wait for the fills under way (tests, benchmarks)."""
        for f in list(self._filling.values()):
            f.result()

    def close(self) -> None:
        if self._filler is not None:
            self._filler.shutdown(wait=False, cancel_futures=True)

    def _fill(self, org_id: str) -> _Org:
        """The newest ``rows_per_org`` rows of ``org_id``, as of a block number taken before (no lock needed)."""
        self.stats["fills"] += 1
        org = _Org(block=self._newest_block())
        rows = self._select("org_id = {o:String}", {"o": org_id, "n": self.rows_per_org},
                            f"{ORDER} LIMIT {{n:UInt32}}")
        for r in rows:
            org.add(r)
        if len(rows) >= self.rows_per_org:
            org.floor = org.keys[0]
        return org

    def _evict(self) -> None:
        held = self.held_bytes
        while held > self.max_bytes and len(self._orgs) > 1:
            _, org = self._orgs.popitem(last=False)
            held -= org.size
        if held > self.max_bytes:  # one org alone above the budget: keep its newest rows within it
            org = next(iter(self._orgs.values()))
            org.trim(max(1, len(org.keys) * self.max_bytes // max(held, 1)))


def window_for(store: Store, *, rows_per_org: int, max_bytes: int, detail_max: int, retention_days: int,
               background: bool = True, limits: Mapping[str, str] | None = None) -> PageWindow | None:
    """A window over ``store``'s events table, or None when it is off (``rows_per_org`` 0). It looks at the table
    at its first page (the store need not be up when the API starts)."""
    if rows_per_org <= 0:
        return None
    return PageWindow(store, rows_per_org=rows_per_org, max_bytes=max_bytes, detail_max=detail_max,
                      retention_days=retention_days, background=background, limits=limits)


def watch(store: Store, table: str = EVENTS_TABLE) -> tuple[bool, TableChanges | None]:
    """(whether ``table`` is a plain MergeTree of one block-number sequence, module contract; on the embedded
    engine the watcher of its directories, else None)."""
    rows = store.client().query(
        "SELECT engine, data_paths FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": store.database, "t": table}).result_rows
    plain = bool(rows) and str(rows[0][0]).endswith("MergeTree") and "Replicated" not in str(rows[0][0])
    if not plain:
        log.info("page_window.off", table=table, engine=rows[0][0] if rows else None)
        return False, None
    paths = [str(p) for p in rows[0][1]]
    if store.embedded and paths and all(os.path.isdir(p) for p in paths):
        return True, TableChanges(paths)
    return True, None


def read_page(window: PageWindow | None, store: Store, sq: ScopedQuery, filters: EventFilters, catalog: Catalog,
              limit: int, after: tuple[datetime, uuid.UUID] | None, detail_max: int
              ) -> tuple[list[dict[str, Any]], tuple[datetime, uuid.UUID] | None]:
    """A list page: the window's answer when it has one, else :func:`~auditlogkit.query_api.read.events.list_page`
    (``sq`` carries the same filters and position)."""
    if window is not None:
        got = window.page(sq.principal, filters, catalog, limit, after, detail_max, datetime.now(UTC))
        if got is not None:
            return got
    return list_page(store, sq, catalog, limit, detail_max)
