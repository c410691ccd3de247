"""Streaming export of the filtered view as CSV or NDJSON (``GET /v1/events/export`` and ``auditlog export``).

Contract:
- ClickHouse renders each row into one finished text line (CSV cells quoted and neutralised against formula
  injection; NDJSON objects in the API's event shape incl. labels and the original ``detail`` JSON), and the
  lines are streamed in blocks of ``block_rows`` (``max_block_size``) with ``max_memory_usage`` set: memory
  stays constant whatever the row count, and Python only joins strings;
- the rows are read in keyset pages of ``page_rows`` (chDB's engine runs a query ahead of its reader, so one
  query over everything would buffer its whole output); each page streams in blocks;
- the whole query runs on ONE thread (a worker of the export pool, with that thread's own client: chDB must not
  share a connection across threads); chunks reach the HTTP response through a bounded queue, so a slow client
  slows the query instead of buffering; a reader that closes the stream, or drops it unread (the client left
  before the first byte), stops the query and frees the thread;
- CSV starts with a header row (:data:`CSV_COLUMNS`); a cell whose text starts with ``=``, ``+``, ``-``, ``@``,
  tab or CR is prefixed with ``'``;
- :meth:`ExportStream.start` waits for the first block, so a failing query raises before any byte is sent; a
  failure later aborts the stream (the client sees a truncated transfer, the log says why);
- rows come newest first, deduplicated by event_id (``FINAL``), scoped by the given :class:`ScopedQuery`.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import uuid
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Literal

from auditlog.logs import get_logger
from auditlog.store import Store
from query_api.filters import EventFilters
from query_api.scoping import ScopedQuery
from schemas.catalog import Catalog
from schemas.rows import EVENTS_TABLE

log = get_logger("query_api.export")
Format = Literal["csv", "ndjson"]
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}

CSV_COLUMNS: tuple[str, ...] = (
    "event_id", "occurred_at", "received_at", "org_id", "workspace_id", "scope", "scope_label", "category",
    "category_label", "action", "action_label", "status", "actor_id", "actor_email", "actor_type", "actor_ip",
    "actor_user_agent", "target_type", "target_id", "target_name", "description", "source", "request_id", "detail",
)


def _ts(col: str) -> str:
    return f"concat(substring(formatDateTime({col}, '%Y-%m-%dT%H:%i:%S.%f', 'UTC'), 1, 23), 'Z')"


_LABELS = {
    "scope_label": "transform(toString(scope), {x_sc:Array(String)}, {x_sl:Array(String)}, toString(scope))",
    "category_label": "transform(concat(scope, '/', category), {x_cc:Array(String)}, {x_cl:Array(String)}, "
                      "toString(category))",
    "action_label": "transform(concat(scope, '/', action), {x_ac:Array(String)}, {x_al:Array(String)}, "
                    "toString(action))",
}
_CSV_VALUES = {
    "event_id": "toString(event_id)", "occurred_at": _ts("occurred_at"), "received_at": _ts("received_at"),
    "status": "toString(status)", "actor_type": "toString(actor_type)", **_LABELS,
}


def _csv_cell(col: str) -> str:
    """One quoted CSV cell; text starting with = + - @ TAB CR gets a leading apostrophe."""
    v = "(" + _CSV_VALUES.get(col, f"ifNull(toString({col}), '')") + ")"
    neutral = f"if(substring({v}, 1, 1) IN ('=', '+', '-', '@', '\\t', '\\r'), concat('''', {v}), {v})"
    return f"concat('\"', replaceAll({neutral}, '\"', '\"\"'), '\"')"


CSV_LINE_SQL = "arrayStringConcat([" + ", ".join(_csv_cell(c) for c in CSV_COLUMNS) + "], ',')"
_JSON_TYPE = (
    "Tuple(schema_version UInt8, event_id String, occurred_at String, org_id String, workspace_id Nullable(String), "
    "scope String, scope_label String, category String, category_label String, action String, action_label String, "
    "status String, actor Tuple(id String, email Nullable(String), type String, ip Nullable(String), "
    "user_agent Nullable(String)), target Tuple(type Nullable(String), id Nullable(String), name Nullable(String)), "
    "description String, source Nullable(String), request_id Nullable(String), received_at String)"
)
_JSON_VALUES = (
    f"schema_version, toString(event_id), {_ts('occurred_at')}, org_id, workspace_id, toString(scope), "
    f"{_LABELS['scope_label']}, toString(category), {_LABELS['category_label']}, toString(action), "
    f"{_LABELS['action_label']}, toString(status), "
    "tuple(actor_id, actor_email, toString(actor_type), actor_ip, actor_user_agent), "
    "tuple(CAST(target_type, 'Nullable(String)'), target_id, target_name), description, "
    f"CAST(source, 'Nullable(String)'), request_id, {_ts('received_at')}"
)
NDJSON_LINE_SQL = (f"concat(substring(toJSONString(CAST(tuple({_JSON_VALUES}), '{_JSON_TYPE}')) AS j_obj, 1, "
                   "length(j_obj) - 1), ',\"detail\":', ifNull(detail, 'null'), '}')")


def label_params(catalog: Catalog) -> dict[str, list[str]]:
    sc, sl, cc, cl, ac, al = [], [], [], [], [], []
    for s in catalog.scopes.values():
        sc.append(s.code)
        sl.append(s.label)
        for c in s.categories.values():
            cc.append(f"{s.code}/{c.code}")
            cl.append(c.label)
            for a in c.actions.values():
                ac.append(f"{s.code}/{a.code}")
                al.append(a.label)
    return {"x_sc": sc, "x_sl": sl, "x_cc": cc, "x_cl": cl, "x_ac": ac, "x_al": al}


def export_sql(sq: ScopedQuery, fmt: str) -> str:
    line = CSV_LINE_SQL if fmt == "csv" else NDJSON_LINE_SQL
    return (f"SELECT {line} AS line FROM {EVENTS_TABLE} FINAL WHERE {sq.where()} "
            "ORDER BY occurred_at DESC, event_id DESC")


def export_filename(f: EventFilters, fmt: str) -> str:
    """The file name of an export of ``f``: ``audit-log-<start>-<end>.<csv|ndjson>`` (UTC, basic ISO 8601)."""
    stamp = "%Y%m%dT%H%M%SZ"
    return f"audit-log-{f.start.strftime(stamp)}-{f.end.strftime(stamp)}.{fmt}"


def csv_header() -> bytes:
    return (",".join(CSV_COLUMNS) + "\n").encode()


_DONE = object()
_CSV_KEY = re.compile(r'^"([0-9a-f-]{36})","([0-9T:.\-]+Z)"')


def line_key(line: str, fmt: str) -> tuple[datetime, uuid.UUID]:
    """(occurred_at, event_id) of a rendered line: the keyset position after it."""
    if fmt == "csv":
        m = _CSV_KEY.match(line)
        if m is None:
            raise ValueError(f"unexpected export line start {line[:80]!r}")
        eid, ts = m.group(1), m.group(2)
    else:
        doc = json.loads(line)
        eid, ts = doc["event_id"], doc["occurred_at"]
    return datetime.fromisoformat(ts), uuid.UUID(eid)


class _Query:
    """The producer side of one export, run by a pool thread. It holds no reference to its :class:`ExportStream`,
    so a stream dropped without being read (the client left before the first byte) is collected, and its
    finalizer stops this query instead of leaving it blocked on the full queue, holding an export thread."""

    def __init__(self, store: Store, sq: ScopedQuery, fmt: str, labels: dict[str, list[str]], page_rows: int,
                 settings: dict[str, Any], queue_chunks: int) -> None:
        self.fmt = fmt
        self.rows = 0
        self.q: queue.Queue[Any] = queue.Queue(maxsize=queue_chunks)
        self.stop = threading.Event()
        self._store = store
        self._sq = sq
        self._labels = labels
        self._page_rows = page_rows
        self._settings = settings

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        """Keyset pages of ``page_rows`` (the engine may run a query ahead of its reader: a page bounds what it
        can buffer), each streamed in blocks; the next page starts after the last line's (occurred_at, event_id)."""
        try:
            client = self._store.client()
            after: tuple[datetime, uuid.UUID] | None = None
            while True:
                sq = self._sq.copy()
                if after is not None:
                    sq.after(*after)
                sql = export_sql(sq, self.fmt) + " LIMIT {x_page:UInt32}"
                params = {**sq.params, **self._labels, "x_page": self._page_rows}
                n, last = 0, ""
                with client.query_column_block_stream(sql, parameters=params, settings=self._settings) as blocks:
                    for block in blocks:
                        lines = block[0]
                        if not lines:
                            continue
                        if not self._put(("\n".join(lines) + "\n").encode()):
                            return  # the reader went away: closing the stream ends the query
                        self.rows += len(lines)
                        n += len(lines)
                        last = lines[-1]
                if n < self._page_rows:
                    break
                after = line_key(last, self.fmt)
            self._put(_DONE)
        except BaseException as exc:
            self._put(exc)


class ExportStream:
    """One export: a query running on a pool thread, its rendered chunks handed over through a bounded queue."""

    def __init__(self, store: Store, sq: ScopedQuery, catalog: Catalog, fmt: str, pool: ThreadPoolExecutor, *,
                 block_rows: int = 2048, page_rows: int = 500_000, max_memory: int = 1 << 30,
                 queue_chunks: int = 4) -> None:
        if fmt not in MEDIA_TYPES:
            raise ValueError(f"unknown export format {fmt!r}")
        self.fmt = fmt
        settings: dict[str, Any] = {"max_block_size": block_rows, "max_memory_usage": max_memory,
                                    "max_threads": 1, "output_format_json_escape_forward_slashes": 0}
        self._query = _Query(store, sq, fmt, label_params(catalog), page_rows, settings, queue_chunks)
        self._q = self._query.q
        self._pool = pool
        self._first: Any = None
        weakref.finalize(self, self._query.stop.set)

    @property
    def rows(self) -> int:
        """Rows handed to the reader's queue so far."""
        return self._query.rows

    # ----- reader side ---------------------------------------------------------------------------
    def start(self) -> ExportStream:
        """Submit the query and wait for its first chunk (raises if the query fails at once)."""
        self._pool.submit(self._query.run)
        self._first = self._q.get()
        if isinstance(self._first, BaseException):
            self._query.stop.set()
            raise self._first
        return self

    def __iter__(self) -> Iterator[bytes]:
        try:
            if self.fmt == "csv":
                yield csv_header()
            item = self._first
            while item is not _DONE:
                if isinstance(item, BaseException):
                    log.error("export.failed", rows=self.rows, error=repr(item))
                    raise item
                yield item
                item = self._q.get()
        finally:
            self.close()

    def close(self) -> None:
        self._query.stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
