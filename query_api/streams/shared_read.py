"""One read of the newly stored rows for all the caught-up streams of a process, instead of one read per stream.

Contract of :class:`SharedRead`:
- :meth:`~SharedRead.rows` gives a stream exactly the rows a read of its own would give it
  (:func:`auditlogkit.query_api.streams.reader.next_batch`) between its position and the stored end (what the
  stream may see, in (partition, offset) order, at most ``per`` a partition and ``cap`` in all), or None when the
  shared read does not cover it (the caller then reads alone): a stream more than ``near`` offsets behind the end
  in a partition (a backfill, a destination back from an outage: it must not drag every other stream's read back
  with it), one whose configuration changed since the read, a read that hit :attr:`SharedRead.max_rows`;
- one query serves every stream asking about the same stored end: the rows after the lowest position of the
  streams that asked recently (:attr:`SharedRead.forget_seconds`), matching any of their conditions (each stream's
  own :func:`~auditlogkit.query_api.streams.reader.scoped` conditions, so another org's rows never reach it),
  with one flag per stream saying whose they are; a later stored end, or a stream the read did not include,
  reads again (one caller at a time: the others wait and reuse it);
- every stream gets its own copies of the row dicts.
"""

from __future__ import annotations

import re
import threading
import time
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
from auditlogkit.server.store import Store

_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*):")
Row = dict[str, Any]


def _suffixed(where: str, i: int) -> str:
    """``where`` with every ``{name:`` placeholder renamed ``{name_i:`` (each stream's parameters apart)."""
    return _PARAM.sub(lambda m: "{" + f"{m.group(1)}_{i}:", where)


@dataclass(frozen=True)
class _Read:
    end: Position
    low: Position
    members: dict[str, tuple[Any, ...]]
    """stream id -> the configuration key its condition was built from."""
    rows: list[tuple[Row, frozenset[str]]]
    """(row, ids of the streams that see it) in (partition, offset) order."""
    complete: bool


def _config(stream: Stream) -> tuple[Any, ...]:
    return (stream.org_id, repr(sorted(stream.filters.items())), stream.start_at)


class SharedRead:
    """The shared read (module contract)."""

    def __init__(self, store: Store, topic: str, catalog: Catalog, scope: Callable[[Stream, Catalog], ScopedQuery], *,
                 detail_max: int, near: int = 5_000, max_rows: int = 50_000, forget_seconds: float = 5.0) -> None:
        """``scope``: what a stream may see (:func:`auditlogkit.query_api.streams.reader.scoped`)."""
        self.store, self.topic, self.catalog, self.scope = store, topic, catalog, scope
        self.detail_max, self.near, self.max_rows, self.forget_seconds = detail_max, near, max_rows, forget_seconds
        self._lock = threading.Lock()
        self._asking: dict[str, tuple[Stream, Position, float]] = {}
        self._read: _Read | None = None
        self.queries = 0
        """Shared reads made (for tests and metrics)."""

    def rows(self, stream: Stream, position: Position, end: Position, per: int, cap: int) -> list[Row] | None:
        """The stream's rows after ``position`` up to ``end`` (module contract)."""
        if any(hi - position.get(p, -1) > self.near for p, hi in end.items()) or set(position) - set(end):
            return None
        with self._lock:
            now = time.monotonic()
            self._asking[stream.id] = (stream, dict(position), now)
            for sid in [sid for sid, (_, _, t) in self._asking.items() if now - t > self.forget_seconds]:
                del self._asking[sid]
            r = self._read
            if r is None or not self._covers(r, stream, position, end):
                r = self._read = self._query(end)
                if not self._covers(r, stream, position, end):
                    return None
        out: list[Row] = []
        taken: dict[int, int] = {}
        for row, who in r.rows:
            if stream.id not in who:
                continue
            p, o = int(row["tail_p"]), int(row["tail_o"])
            if o <= position.get(p, -1) or taken.get(p, 0) >= per:
                continue
            taken[p] = taken.get(p, 0) + 1
            out.append(dict(row))
            if len(out) >= cap:
                break
        return out

    @staticmethod
    def _covers(r: _Read, stream: Stream, position: Position, end: Position) -> bool:
        return (r.complete and r.end == end and r.members.get(stream.id) == _config(stream)
                and all(r.low.get(p, -1) <= position.get(p, -1) for p in end))

    def _query(self, end: Position) -> _Read:
        members: dict[str, tuple[Any, ...]] = {}
        low: Position = {}
        conds: list[str] = []
        params: dict[str, Any] = {}
        ids: list[str] = []
        for i, (sid, (stream, position, _)) in enumerate(sorted(self._asking.items())):
            sq = self.scope(stream, self.catalog)
            conds.append(f"({_suffixed(sq.where(), i)})")
            params.update({f"{k}_{i}": v for k, v in sq.params.items()})
            members[sid] = _config(stream)
            ids.append(sid)
            for p in end:
                lo = position.get(p, -1)
                low[p] = min(low.get(p, lo), lo)
        between, bparams = tail_position.between_sql(low, end, "sb")
        params.update(bparams, sr_topic=self.topic, sr_cap=self.max_rows, d_max=self.detail_max)
        sql = (f"SELECT {select_list(cap_detail=True)}, kafka_partition AS tail_p, kafka_offset AS tail_o, "
               f"[{', '.join(conds)}] AS sr_hits FROM {EVENTS_TABLE} "
               f"WHERE kafka_topic = {{sr_topic:String}} AND {between} AND ({' OR '.join(conds)}) "
               "ORDER BY kafka_partition, kafka_offset LIMIT {sr_cap:UInt32}")
        self.queries += 1
        raw = list(self.store.client().query(sql, parameters=params).named_results())
        rows = []
        for row in raw:
            hits = row.pop("sr_hits")
            rows.append((row, frozenset(sid for sid, h in zip(ids, hits, strict=True) if h)))
        return _Read(dict(end), low, members, rows, len(raw) < self.max_rows)
