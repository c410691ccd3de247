"""Streaming export of the filtered view as CSV or NDJSON (``GET /v1/events/export`` and ``auditlog export``).

Contract:
- ClickHouse renders each row into one finished text line (CSV cells quoted and neutralised against formula
  injection; NDJSON objects in the API's event shape incl. labels and the original ``detail`` JSON), and the
  lines are streamed in blocks of ``block_rows`` (``max_block_size``) with ``max_memory_usage`` set: memory
  stays constant whatever the row count, and Python only joins strings;
- the rows are read in keyset pages of ``page_rows`` (chDB's engine runs a query ahead of its reader, so one
  query over everything would buffer its whole output); each page streams in blocks;
- the whole query runs on ONE export thread (with that thread's own client: chDB must not share a connection
  across threads); its chunks reach the event loop through a hand-over of at most ``queue_chunks`` chunks, so a
  slow client slows the query instead of buffering, and no thread of the loop's pool ever waits for a client;
- every page's query carries ``max_execution_time``, ``max_memory_usage`` and a ``log_comment`` tag;
  :meth:`ExportStream.aclose` (the response ended: complete, stalled client, disconnect) stops the query, killing
  it by its tag if it is still running, and a stream dropped unread stops it through its finalizer;
- CSV starts with a header row (:data:`CSV_COLUMNS`); a cell whose text starts with ``=``, ``+``, ``-``, ``@``,
  tab or CR is prefixed with ``'``;
- :meth:`ExportStream.start` awaits the first block, so a failing query raises before any byte is sent; a
  failure later aborts the stream (the client sees a truncated transfer, the log says why);
- rows come newest first, deduplicated by event_id (``FINAL``), scoped by the given :class:`ScopedQuery`.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import groupby
from typing import Any

from auditlogkit.query_api.core.query_runner import kill_tagged
from auditlogkit.query_api.read.event_shape import CSV_FIELDS, NDJSON_FIELDS, EventField, label_params, value_sql
from auditlogkit.query_api.read.filters import EventFilters
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.schemas.tables import EVENTS_TABLE
from auditlogkit.server.logs import get_logger
from auditlogkit.server.store import Store

log = get_logger("auditlogkit.query_api.read.export")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}

#: the CSV header row; a cell is one :data:`~auditlogkit.query_api.read.event_shape.CSV_FIELDS` field as text, '' for NULL
CSV_COLUMNS: tuple[str, ...] = tuple(f.flat for f in CSV_FIELDS)


def _csv_text(f: EventField) -> str:
    """The field as CSV text: a stored text column as ``toString``, '' for NULL (a LowCardinality column stays
    one, so the cell's functions run once per distinct value), anything else as the exports render it."""
    if f.column is None or f.is_time or f.ch_type == "UUID" or f.ch_type.startswith("Enum"):
        return value_sql(f)
    return f"ifNull(toString({f.flat}), '')"


def _csv_cell(f: EventField) -> str:
    """One quoted CSV cell; text starting with = + - @ TAB CR gets a leading apostrophe."""
    v = f"({_csv_text(f)})"
    neutral = f"if(substring({v}, 1, 1) IN ('=', '+', '-', '@', '\\t', '\\r'), concat('''', {v}), {v})"
    return f"concat('\"', replaceAll({neutral}, '\"', '\"\"'), '\"')"


CSV_LINE_SQL = "arrayStringConcat([" + ", ".join(_csv_cell(f) for f in CSV_FIELDS) + "], ',')"


def _json_tuple(fields: tuple[EventField, ...]) -> tuple[str, str]:
    """(values, type) of a named tuple of ``fields`` in order; consecutive fields of a ``group`` nest."""
    values: list[str] = []
    types: list[str] = []
    for group, members in groupby(fields, key=lambda f: f.group):
        fs = list(members)
        vals = [value_sql(f) for f in fs]
        typs = [f"{f.name} {f.json_type}" for f in fs]
        if group is None:
            values += vals
            types += typs
        else:
            values.append(f"tuple({', '.join(vals)})")
            types.append(f"{group} Tuple({', '.join(typs)})")
    return ", ".join(values), f"Tuple({', '.join(types)})"


_JSON_VALUES, _JSON_TYPE = _json_tuple(tuple(f for f in NDJSON_FIELDS if not f.json_text))
#: the typed fields rendered by toJSONString, then each stored JSON text spliced in as is ('null' for NULL)
NDJSON_LINE_SQL = (f"concat(substring(toJSONString(CAST(tuple({_JSON_VALUES}), '{_JSON_TYPE}')) AS j_obj, 1, "
                   "length(j_obj) - 1), "
                   + "".join(f"',\"{f.name}\":', ifNull({f.flat}, 'null'), " for f in NDJSON_FIELDS if f.json_text)
                   + "'}')")


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
    """The producer side of one export, run by an export thread. It holds no reference to its
    :class:`ExportStream`, so a stream dropped unread is collected and its finalizer stops this query."""

    def __init__(self, store: Store, sq: ScopedQuery, fmt: str, labels: dict[str, list[str]], page_rows: int,
                 settings: dict[str, Any], queue_chunks: int, loop: asyncio.AbstractEventLoop) -> None:
        self.fmt = fmt
        self.rows = 0
        self.q: asyncio.Queue[Any] = asyncio.Queue()
        self.room = threading.Semaphore(queue_chunks)  # chunks handed over and not yet taken by the reader
        self.stop = threading.Event()
        self.finished = threading.Event()
        self._loop = loop
        self._store = store
        self._sq = sq
        self._labels = labels
        self._page_rows = page_rows
        self._settings = settings

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            if self.room.acquire(timeout=0.2):
                try:
                    self._loop.call_soon_threadsafe(self.q.put_nowait, item)
                except RuntimeError:  # the loop is closed: nobody reads any more
                    return False
                return True
        return False

    def run(self) -> None:
        """Keyset pages of ``page_rows`` (the engine may run a query ahead of its reader: a page bounds what it
        can buffer), each streamed in blocks; the next page starts after the last line's (occurred_at, event_id)."""
        try:
            client = self._store.client()
            after: tuple[datetime, uuid.UUID] | None = None
            while not self.stop.is_set():
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
        finally:
            self.finished.set()


class ExportStream:
    """One export: a query on an export thread, its rendered chunks handed to the event loop (no thread of the
    loop's pool waits on it); at most ``queue_chunks`` chunks wait for the reader, so a slow reader slows the query."""

    def __init__(self, store: Store, sq: ScopedQuery, catalog: Catalog, fmt: str, pool: ThreadPoolExecutor, *,
                 block_rows: int = 2048, page_rows: int = 500_000, max_memory: int = 1 << 30,
                 timeout_s: float = 30.0, queue_chunks: int = 4) -> None:
        if fmt not in MEDIA_TYPES:
            raise ValueError(f"unknown export format {fmt!r}")
        self.fmt = fmt
        self.tag = f"export-{uuid.uuid4().hex}"
        self.timeout_s = timeout_s
        settings: dict[str, Any] = {"max_block_size": block_rows, "max_memory_usage": max_memory,
                                    "max_execution_time": f"{timeout_s:g}", "log_comment": self.tag,
                                    "max_threads": 1, "output_format_json_escape_forward_slashes": 0}
        self._store = store
        self._query = _Query(store, sq, fmt, label_params(catalog), page_rows, settings, queue_chunks,
                             asyncio.get_running_loop())
        self._pool = pool
        self._first: Any = None
        weakref.finalize(self, self._query.stop.set)

    @property
    def rows(self) -> int:
        """Rows handed to the reader so far."""
        return self._query.rows

    async def start(self) -> ExportStream:
        """Submit the query and wait for its first chunk (raises if the query fails at once)."""
        self._pool.submit(self._query.run)
        self._first = await self._take()
        if isinstance(self._first, BaseException):
            await self.aclose()
            raise self._first
        return self

    async def _take(self) -> Any:
        item = await self._query.q.get()
        self._query.room.release()
        return item

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.fmt == "csv":
            yield csv_header()
        item = self._first
        while item is not _DONE:
            if isinstance(item, BaseException):
                log.error("export.failed", rows=self.rows, error=repr(item))
                raise item
            yield item
            item = await self._take()

    async def aclose(self) -> None:
        """Stop the query (killing it by its tag if it is still running) and free its thread."""
        q = self._query
        q.stop.set()
        if not q.finished.is_set():
            await asyncio.get_running_loop().run_in_executor(None, self._kill_if_running)

    def _kill_if_running(self) -> None:
        if not self._query.finished.wait(0.5):
            kill_tagged(self._store, self.tag)


def open_export_sync(store: Store, sq: ScopedQuery, catalog: Catalog, fmt: str) -> Iterator[bytes]:
    """The export as a blocking iterator on a private event loop (the CLI's ``--org`` mode). The query starts
    now, so a failing one raises here; the iterator's end or close stops it."""
    loop = asyncio.new_event_loop()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export")

    async def start() -> ExportStream:
        return await ExportStream(store, sq, catalog, fmt, pool).start()

    try:
        stream = loop.run_until_complete(start())
    except BaseException:
        pool.shutdown(wait=True)
        loop.close()
        raise

    def chunks() -> Iterator[bytes]:
        it = stream.__aiter__()
        try:
            while True:
                try:
                    yield loop.run_until_complete(it.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(stream.aclose())
            pool.shutdown(wait=True)
            loop.close()

    return chunks()
