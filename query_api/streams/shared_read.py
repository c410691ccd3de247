"""One read of the newly stored rows for all the caught-up streams of a process, instead of one read per stream.

Contract of :class:`SharedRead`:
- :meth:`~SharedRead.rows` gives a stream exactly the rows a read of its own would give it
  (:func:`auditlogkit.query_api.streams.reader.next_batch`) between its position and the stored end (what the
  stream may see, in (partition, offset) order, at most ``per`` a partition and ``cap`` in all), or None when the
  shared read does not cover it (the caller then reads alone): a stream more than ``near`` offsets behind the end
  in all (a backfill, a destination back from an outage: it must not drag the others' read back with it), one
  that joined or changed its configuration since the read (it joins the group's next read: at a new stored end, or
  ``rejoin_seconds`` after the last, so a burst of newcomers is not a read each), the members of a read that
  hit :attr:`SharedRead.max_rows` or failed (logged ``streams.shared_read_failed``);
- the streams are split into groups of about ``group_size`` (the query grows with its streams); one query per
  group serves every member asking about the same stored end or an earlier one: the rows after the lowest
  position of the group's streams that asked recently (:attr:`SharedRead.forget_seconds`) and are near the end,
  matching any of their conditions (each stream's own :func:`~auditlogkit.query_api.streams.reader.scoped`
  conditions, so another org's rows never reach it), with one flag per stream saying whose they are; a later
  stored end reads again (one caller at a time: the others wait and reuse it);
- every stream gets its own copies of the row dicts.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auditlogkit.query_api.read import tail_position
from auditlogkit.query_api.read.event_shape import select_list
from auditlogkit.query_api.read.tail_position import Position
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.query_api.streams.model import Stream
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.schemas.tables import EVENTS_TABLE
from auditlogkit.server.logs import get_logger
from auditlogkit.server.store import Store

log = get_logger("auditlogkit.query_api.streams.shared_read")
Row = dict[str, Any]


@dataclass(frozen=True)
class _Read:
    end: Position
    low: Position
    members: dict[str, tuple[Any, ...]]
    """stream id -> the configuration key its condition was built from."""
    rows_of: dict[str, list[Row]]
    """stream id -> the rows it may see, in (partition, offset) order (empty when not ``complete``)."""
    complete: bool
    """False: more rows than one read holds, or the query failed; its members read alone for this end."""
    made: float = 0.0
    """``time.monotonic()`` of the query."""


def _config(stream: Stream) -> tuple[Any, ...]:
    return (stream.org_id, repr(sorted(stream.filters.items())), stream.start_at)


def _behind(position: Position, end: Position) -> int:
    return sum(max(0, hi - position.get(p, -1)) for p, hi in end.items())


class SharedRead:
    """The shared read (module contract)."""

    def __init__(self, store: Store, topic: str, catalog: Catalog, scope: Callable[[Stream, Catalog], ScopedQuery], *,
                 detail_max: int, near: int = 5_000, max_rows: int = 50_000, group_size: int = 32,
                 forget_seconds: float = 5.0, rejoin_seconds: float = 1.0) -> None:
        """``scope``: what a stream may see (:func:`auditlogkit.query_api.streams.reader.scoped`); ``near``: how
        many offsets behind the end, summed over the partitions, a stream may be to share (at most half of
        ``max_rows``); ``group_size``: streams per shared query (the query's size grows with its streams)."""
        self.store, self.topic, self.catalog, self.scope = store, topic, catalog, scope
        self.detail_max, self.max_rows, self.forget_seconds = detail_max, max_rows, forget_seconds
        self.near = min(near, max_rows // 2)
        self.group_size = group_size
        self.rejoin_seconds = rejoin_seconds
        self._lock = threading.Lock()
        self._asking: dict[str, tuple[Stream, Position, float]] = {}
        self._reads: dict[int, _Read] = {}
        self.queries = 0
        """Shared reads made (for tests and metrics)."""

    def _group(self, stream_id: str) -> int:
        groups = 1
        while groups * self.group_size < len(self._asking):  # powers of two: a group changes only when they double
            groups *= 2
        return zlib.crc32(stream_id.encode()) % groups

    def rows(self, stream: Stream, position: Position, end: Position, per: int, cap: int) -> list[Row] | None:
        """The stream's rows after ``position`` up to ``end`` (module contract)."""
        if set(position) - set(end) or _behind(position, end) > self.near:
            return None
        with self._lock:
            now = time.monotonic()
            self._asking[stream.id] = (stream, dict(position), now)
            for sid in [sid for sid, (_, _, t) in self._asking.items() if now - t > self.forget_seconds]:
                del self._asking[sid]
            g = self._group(stream.id)
            r = self._reads.get(g)
            member = r is not None and r.members.get(stream.id) == _config(stream)
            if r is None or _newer(end, r.end) or (not member and now - r.made >= self.rejoin_seconds):
                r = self._reads[g] = self._query(g, end)
            elif not member:
                return None  # read alone for now: the group's next read (new end, or after rejoin_seconds) has it
            if not self._covers(r, stream, position, end):
                return None
        out: list[Row] = []
        taken: dict[int, int] = {}
        for row in r.rows_of.get(stream.id, ()):
            p, o = int(row["tail_p"]), int(row["tail_o"])
            if o <= position.get(p, -1) or o > end[p] or taken.get(p, 0) >= per:
                continue
            taken[p] = taken.get(p, 0) + 1
            out.append(dict(row))
            if len(out) >= cap:
                break
        return out

    @staticmethod
    def _covers(r: _Read, stream: Stream, position: Position, end: Position) -> bool:
        return (r.complete and r.members.get(stream.id) == _config(stream) and set(r.end) == set(end)
                and all(r.end[p] >= hi and r.low.get(p, -1) <= position.get(p, -1) for p, hi in end.items()))

    def _query(self, group: int, end: Position) -> _Read:
        members: dict[str, tuple[Any, ...]] = {}
        low: Position = {}
        conds: list[str] = []
        params: dict[str, Any] = {}
        ids: list[str] = []
        for sid, (stream, position, _) in sorted(self._asking.items()):
            if self._group(sid) != group or set(position) - set(end) or _behind(position, end) > self.near:
                continue
            i = len(ids)
            where, own = self.scope(stream, self.catalog).suffixed(str(i))
            conds.append(f"({where})")
            params.update(own)
            members[sid] = _config(stream)
            ids.append(sid)
            for p in end:
                lo = position.get(p, -1)
                low[p] = min(low.get(p, lo), lo)
        if not ids:
            return _Read(dict(end), low, members, {}, False, time.monotonic())
        between, bparams = tail_position.between_sql(low, end, "sb")
        params.update(bparams, sr_topic=self.topic, sr_cap=self.max_rows, d_max=self.detail_max)
        sql = (f"SELECT {select_list(cap_detail=True)}, kafka_partition AS tail_p, kafka_offset AS tail_o, "
               f"[{', '.join(conds)}] AS sr_hits FROM {EVENTS_TABLE} "
               f"WHERE kafka_topic = {{sr_topic:String}} AND {between} AND ({' OR '.join(conds)}) "
               "ORDER BY kafka_partition, kafka_offset LIMIT {sr_cap:UInt32}")
        self.queries += 1
        try:
            raw = list(self.store.client().query(sql, parameters=params).named_results())
        except Exception as exc:  # its members read alone for this end; the next end tries again
            log.warning("streams.shared_read_failed", streams=len(ids), error=repr(exc)[:300])
            return _Read(dict(end), low, members, {}, False, time.monotonic())
        if len(raw) >= self.max_rows:
            return _Read(dict(end), low, members, {}, False, time.monotonic())
        rows_of: dict[str, list[Row]] = {sid: [] for sid in ids}
        for row in raw:
            hits = row.pop("sr_hits")
            for sid, h in zip(ids, hits, strict=True):
                if h:
                    rows_of[sid].append(row)
        return _Read(dict(end), low, members, rows_of, True, time.monotonic())


def _newer(end: Position, than: Position) -> bool:
    """``end`` reaches past ``than`` in some partition (a later stored end)."""
    return any(hi > than.get(p, -1) for p, hi in end.items())
