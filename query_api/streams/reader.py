"""A stream's next batch: the org's stored events after its position, as an org owner may list them, in the
live tail's order.

Contract:
- a stream sees what its org's owner may list (:func:`scoped`: a :class:`~auditlogkit.query_api.security.scoping.ScopedQuery`
  of an ``org_owner`` principal of the stream's org, with the stream's filters ANDed by the list's own filter
  table, and ``received_at >= start`` for a backfill): another org's events never;
- :func:`next_batch` reads the rows after the position up to where the stored log ends now (the consumer's
  per-partition watermarks, as the live tail's catch-up: :func:`auditlogkit.query_api.read.tail_position.between_sql`; at most
  :data:`WINDOW` offsets a partition per read, so a backfill is many cheap reads), each partition in offset
  order, merges the partitions by ``received_at`` (as the tail does) and returns at most ``limit`` events as the
  list returns them (:func:`auditlogkit.query_api.read.events.public_row`);
- :attr:`Batch.after` is the position once the batch is delivered: per partition the last row taken, or the
  end of what was read where every row up to it was read (rows of other orgs and filtered-out rows are passed too). Nothing
  after a row not in the batch is ever passed, so saving it after delivery skips nothing;
- an ``(org_id, event_id)`` among the ``recent`` ones (a retried send stored twice) is passed without being
  delivered again;
- :func:`lag_seconds`: the age of the oldest stored event the stream has not delivered (0 when caught up);
- :class:`StoredEnd` is where the stored log ends, read once for all the streams of a process: a reading is reused
  for at most ``max_age`` seconds and never after :meth:`StoredEnd.stored` (an insert since), so a stream never
  reads less than what was stored before its read began, except for at most ``max_age`` where no one calls
  :meth:`StoredEnd.stored` (``auditlog stream``, a process of its own).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from auditlogkit.query_api.read import tail_position
from auditlogkit.query_api.read.event_shape import select_list
from auditlogkit.query_api.read.events import public_row, utc_row
from auditlogkit.query_api.read.filters import FILTERS, EventFilters
from auditlogkit.query_api.read.tail_position import Position
from auditlogkit.query_api.security.principal import READ, Principal
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.query_api.streams.model import Stream
from auditlogkit.query_api.streams.shared_read import SharedRead
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.schemas.tables import EVENTS_TABLE
from auditlogkit.server.db.offsets import stored_watermarks
from auditlogkit.server.store import Store

RECENT_IDS = 10_000
FETCH_FACTOR = 4  # a read fetches at most this many batches' rows (each partition at most one batch's)
WINDOW = 100_000  # a read looks at most this many offsets past the position in each partition


@dataclass
class Batch:
    """One read of a stream (module contract)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    places: list[tuple[int, int]] = field(default_factory=list)
    """(partition, offset) of each event."""
    received: list[datetime] = field(default_factory=list)
    after: Position = field(default_factory=dict)
    more: bool = False
    """Rows remain after this batch (read again at once)."""
    oldest_left: datetime | None = None
    """``received_at`` of the oldest row read but left for a later batch."""


def stream_principal(stream: Stream) -> Principal:
    """The org owner a stream reads as."""
    return Principal(sub=f"stream:{stream.id}", email="", org_id=stream.org_id, role="org_owner",
                     permissions=frozenset({READ}))


def event_filters(filters: Mapping[str, Any]) -> EventFilters:
    """A stream's stored (checked) filters as the list's :class:`EventFilters` (no period: a stream has none)."""
    values = {s.name: tuple(filters[s.name]) if s.repeatable else filters[s.name] for s in FILTERS
              if filters.get(s.name) not in (None, "", [])}
    return EventFilters(MappingProxyType(values))


def scoped(stream: Stream, catalog: Catalog) -> ScopedQuery:
    """What the stream may see (module contract)."""
    sq = ScopedQuery(stream_principal(stream)).with_filters(event_filters(stream.filters), catalog)
    if stream.start_at is not None:
        sq.add("received_at >= {st_start:DateTime64(3, 'UTC')}", st_start=stream.start_at)
    return sq


def stored_position(store: Store, topic: str) -> Position:
    """Where the stored log of ``topic`` ends now (the consumer's per-partition watermarks)."""
    return stored_watermarks(store.client(), topic)


class StoredEnd:
    """Where the stored log of ``topic`` ends, shared by the streams of one process (module contract)."""

    def __init__(self, store: Store, topic: str, max_age: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.topic, self.max_age = store, topic, max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every stored(): a reading taken before it is stale
        self._reading: tuple[int, float, Position] | None = None

    def stored(self) -> None:
        """New events were stored: the next :meth:`get` reads again."""
        self._generation += 1

    def get(self) -> Position:
        with self._lock:  # callers that come together share one query
            gen, r = self._generation, self._reading
            if r is not None and r[0] == gen and self._clock() - r[1] <= self.max_age:
                return dict(r[2])
            taken = self._clock()
            end = stored_position(self.store, self.topic)
            self._reading = (gen, taken, end)
            return dict(end)


def first_offsets(store: Store, topic: str, partitions: list[int]) -> Position:
    """Per partition the offset just below its first stored row (nothing at or below it is stored, nor will be)."""
    sql = (f"SELECT kafka_partition, min(kafka_offset) FROM {EVENTS_TABLE} WHERE kafka_topic = {{t:String}} "
           "AND kafka_partition IN {ps:Array(UInt32)} GROUP BY kafka_partition")
    rows = store.client().query(sql, parameters={"t": topic, "ps": partitions}).result_rows
    return {int(p): int(o) - 1 for p, o in rows if int(o) > 0}


def _fetch(store: Store, topic: str, sq: ScopedQuery, low: Position, high: Position, per: int, cap: int,
           detail_max: int) -> list[dict[str, Any]]:
    between, params = tail_position.between_sql(low, high, "b")
    params.update(sq.params)
    params.update(tail_topic=topic, per_part=per, cap=cap, d_max=detail_max)
    sql = (f"SELECT {select_list(cap_detail=True)}, kafka_partition AS tail_p, kafka_offset AS tail_o "
           f"FROM {EVENTS_TABLE} WHERE kafka_topic = {{tail_topic:String}} AND {between} AND {sq.where()} "
           "ORDER BY kafka_partition, kafka_offset LIMIT {per_part:UInt32} BY kafka_partition LIMIT {cap:UInt32}")
    return list(store.client().query(sql, parameters=params).named_results())


def next_batch(store: Store, topic: str, stream: Stream, position: Position, catalog: Catalog, *, limit: int,
               detail_max: int, recent: OrderedDict[tuple[str, str], None] | None = None,
               stored_end: StoredEnd | None = None, shared: SharedRead | None = None) -> Batch:
    """The stream's next batch after ``position`` (module contract); ``shared``: read with the other streams of the
    process when it covers this one (:class:`~auditlogkit.query_api.streams.shared_read.SharedRead`)."""
    end = stored_end.get() if stored_end is not None else stored_position(store, topic)
    low = dict(position)
    unnamed = [p for p in end if p not in low]
    if unnamed:  # where such a partition's stored rows begin (a backfill; the retention may have deleted many)
        low.update(first_offsets(store, topic, unnamed))
    high = {p: min(hi, low.get(p, -1) + WINDOW) for p, hi in end.items()}
    cap = limit * FETCH_FACTOR
    rows = shared.rows(stream, position, high, limit, cap) if shared is not None and high == end else None
    if rows is None:
        rows = _fetch(store, topic, scoped(stream, catalog), position, high, limit, cap, detail_max)
    parts: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        parts.setdefault(int(r["tail_p"]), []).append(r)
    truncated = len(rows) >= cap
    last_part = int(rows[-1]["tail_p"]) if rows else -1

    def complete(p: int) -> bool:  # every row of p up to the watermark was read
        return len(parts.get(p, ())) < limit and (not truncated or p < last_part)

    merged = list(heapq.merge(*parts.values(), key=lambda r: (r["received_at"], r["tail_p"], r["tail_o"])))
    taken, left = merged[:limit], merged[limit:]
    batch = Batch(after=dict(position), more=bool(left) or truncated or high != end
                  or any(not complete(p) for p in parts))
    recent = recent if recent is not None else OrderedDict()
    for r in taken:
        p, o = int(r["tail_p"]), int(r["tail_o"])
        batch.after = tail_position.advanced(batch.after, p, o)
        key = (str(r["org_id"]), str(r["event_id"]))
        if key in recent:
            continue
        recent[key] = None
        if len(recent) > RECENT_IDS:
            recent.popitem(last=False)
        row = utc_row(r)
        batch.events.append(public_row(row, catalog))
        batch.places.append((p, o))
        batch.received.append(row["received_at"])
    untaken = {int(r["tail_p"]) for r in left}
    for p, hi in high.items():
        if p not in untaken and complete(p):
            batch.after = tail_position.advanced(batch.after, p, hi)
    if left:
        batch.oldest_left = utc_row(left[0])["received_at"]
    return batch


def lag_seconds(store: Store, topic: str, stream: Stream, catalog: Catalog, now: datetime | None = None) -> float:
    """How old the oldest stored event is that ``stream`` may see and has not delivered (0: caught up)."""
    position = stream.delivery.position if stream.delivery is not None else {}
    after, params = tail_position.after_sql(position, "a")
    sq = scoped(stream, catalog)
    params.update(sq.params)
    params["tail_topic"] = topic
    sql = (f"SELECT min(received_at), count() FROM {EVENTS_TABLE} WHERE kafka_topic = {{tail_topic:String}} "
           f"AND {after} AND {sq.where()}")
    oldest, n = store.client().query(sql, parameters=params).result_rows[0]
    if not n or oldest is None:
        return 0.0
    oldest = oldest.replace(tzinfo=UTC) if oldest.tzinfo is None else oldest
    return max(0.0, ((now or datetime.now(UTC)) - oldest).total_seconds())
