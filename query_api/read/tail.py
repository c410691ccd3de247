"""The live tail's one store reader per process, shared by every stream.

Contract of :class:`TailHub`:
- while at least one stream is subscribed it polls every ``api_tail_poll_seconds`` with ONE query for all of
  them: the rows stored after the hub's position (:mod:`auditlogkit.query_api.read.tail_position`) that some stream may see (each
  stream's scope and filters are a boolean column of that query: the list's own SQL), plus the newest row of each
  partition, so that the position also passes rows nobody asked for;
- a poll's rows go out oldest first (partitions merged by ``received_at``, each in offset order) as ready SSE
  frames whose ``id`` is the position after that row, signed with the server keys (:meth:`TailHub.position_id`);
  an event already sent among the last :data:`RECENT_IDS` events (same ``org_id`` and ``event_id``: a retried
  send stored twice before the merge) is not sent again; another org's event with the same id is its own;
- :meth:`subscribe` returns a :class:`Subscription` and the position it starts after (never while a poll is in
  flight); it ends at ``ends_at`` when given (its token's expiry); a subscription holds at most ``api_tail_backlog_events`` frames for its client, beyond which it is
  overrun: its stream ends and the client resumes with ``Last-Event-ID``;
- :meth:`catch_up` reads, for one resumed stream, what lies between its position and the hub's (its own queries,
  once per resume), page by page with each page's row count and ``occurred_at`` range (for its self-audit);
- :attr:`Subscription.sent` counts the events a stream's client was handed (its self-audit's ``rows``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from auditlogkit.query_api.core.observability import TAIL_EVENTS, TAIL_POLLS, TAIL_STREAMS
from auditlogkit.query_api.core.query_runner import QueryRunner
from auditlogkit.query_api.read import tail_position
from auditlogkit.query_api.read.event_shape import select_list
from auditlogkit.query_api.read.events import public_row, utc_row
from auditlogkit.query_api.read.tail_position import Position
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.schemas.tables import EVENTS_TABLE
from auditlogkit.server.db.offsets import stored_watermarks
from auditlogkit.server.logs import get_logger
from auditlogkit.server.settings import Settings
from auditlogkit.server.signing import ServerKeys
from auditlogkit.server.store import Store

log = get_logger("auditlogkit.query_api.read.tail")
RECENT_IDS = 100_000
POLL_ROWS = 5_000
CATCH_UP_ROWS = 1_000
_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*):")


@dataclass(frozen=True, slots=True)
class Frame:
    """One event ready to send: its place in the log, the hub's position after it, its JSON, and the SSE frame
    with the hub's position as id (rendered once, sent to every stream that may see it)."""

    partition: int
    offset: int
    position: Position
    event_id: str
    data: bytes
    wire: bytes

    def render(self, position_id: Callable[[Position], str], floor: Position | None = None) -> bytes:
        """The SSE frame; ``floor``: partitions in which the stream is ahead of the hub (its id keeps them)."""
        if not floor:
            return self.wire
        return sse_event(position_id(tail_position.highest(self.position, floor)), self.data)


def sse_event(event_id: str, data: bytes) -> bytes:
    return b"id: " + event_id.encode("ascii") + b"\nevent: audit\ndata: " + data + b"\n\n"


@dataclass(frozen=True, slots=True)
class CatchUpPage:
    """One page of a resumed stream's catch-up: its SSE frames, the position after them, how many events they
    are and the earliest and latest ``occurred_at`` among them."""

    wire: bytes
    after: Position
    rows: int
    first_at: datetime
    last_at: datetime


@dataclass(eq=False)
class Subscription:
    """One stream's place at the hub: its WHERE (scope and filters) and the frames waiting for its client, one
    list per poll (``None`` ends the stream)."""

    sq: ScopedQuery
    limit: int
    queue: asyncio.Queue[list[Frame] | None] = field(default_factory=asyncio.Queue)
    floor: Position = field(default_factory=dict)
    resume: Position = field(default_factory=dict)
    """Where a client of this stream resumes without loss: its start, then the position of the last frame sent."""
    pending: int = 0
    overrun: bool = False
    ends_at: float | None = None
    """When the stream ends (epoch seconds; its token's expiry), None: never by itself."""
    sent: int = 0
    """Events handed to this stream's client by :meth:`next_chunk`."""

    def offer(self, frames: list[Frame]) -> None:
        if self.overrun:
            return
        if self.floor:
            frames = [f for f in frames if f.offset > self.floor.get(f.partition, -1)]
        if not frames:
            return
        if self.pending + len(frames) > self.limit:
            self.overrun = True
            self.queue.put_nowait(None)
            return
        self.pending += len(frames)
        self.queue.put_nowait(frames)

    async def next_chunk(self, position_id: Callable[[Position], str], wait_s: float) -> bytes | None:
        """Every frame waiting, as one chunk (b"" when none came within ``wait_s``; None: the stream ends, at the
        end of its queue or at :attr:`ends_at`)."""
        if self.ends_at is not None:
            left = self.ends_at - time.time()
            if left <= 0:
                return None
            wait_s = min(wait_s, left)
        try:
            first = await asyncio.wait_for(self.queue.get(), wait_s)
        except TimeoutError:
            return None if self.ends_at is not None and time.time() >= self.ends_at else b""
        batches = [first]
        while not self.queue.empty() and batches[-1] is not None:
            batches.append(self.queue.get_nowait())
        out: list[bytes] = []
        for frames in batches:
            if frames is None:
                break
            self.pending -= len(frames)
            out += [f.render(position_id, self.floor) for f in frames]
            self.resume = tail_position.highest(frames[-1].position, self.floor)
        self.sent += len(out)
        if not out and batches[-1] is None:
            return None
        if batches[-1] is None:  # send what came before the end, then end at the next call
            self.queue.put_nowait(None)
        return b"".join(out)


def prefixed(sq: ScopedQuery, prefix: str) -> tuple[str, dict[str, Any]]:
    """``sq``'s WHERE and parameters with every parameter renamed ``<prefix><name>`` (to sit beside others)."""
    return (_PARAM.sub(lambda m: "{" + prefix + m.group(1) + ":", sq.where()),
            {prefix + k: v for k, v in sq.params.items()})


def _event_json(row: dict[str, Any], catalog: Catalog) -> bytes:
    return json.dumps(public_row(row, catalog), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class TailHub:
    """The shared reader (module contract)."""

    def __init__(self, store: Store, runner: QueryRunner, settings: Settings, catalog: Catalog,
                 keys: ServerKeys) -> None:
        self.store = store
        self.keys = keys
        self.runner = runner
        self.settings = settings
        self.catalog = catalog
        self.topic = settings.topic
        self.position: Position = {}
        self._subs: list[Subscription] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.polls = 0

    def position_id(self, position: Position) -> str:
        """The signed SSE ``id`` of ``position`` (:func:`auditlogkit.query_api.read.tail_position.encode`)."""
        return tail_position.encode(position, self.topic, self.keys)

    def parse_position(self, text: str) -> Position:
        """The position of a ``Last-Event-ID`` this server issued; ValueError for any other text."""
        return tail_position.decode(text, self.topic, self.keys)

    # ----- streams -------------------------------------------------------------------------------------------
    async def subscribe(self, sq: ScopedQuery, ends_at: float | None = None) -> tuple[Subscription, Position]:
        async with self._lock:
            if self._task is None or self._task.done():
                self.position = await self.runner.run(None, self._stored_position)
                self._task = asyncio.create_task(self._run())
            sub = Subscription(sq, self.settings.api_tail_backlog_events, ends_at=ends_at)
            self._subs.append(sub)
            TAIL_STREAMS.set(len(self._subs))
            return sub, dict(self.position)

    def unsubscribe(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)
        TAIL_STREAMS.set(len(self._subs))

    def end_all(self) -> None:
        """End every stream (server shutdown): each sees the end of its queue after what is already in it."""
        for sub in self._subs:
            sub.queue.put_nowait(None)

    async def close(self) -> None:
        self.end_all()
        self._subs.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ----- the shared poll -----------------------------------------------------------------------------------
    async def _run(self) -> None:
        while self._subs:
            await asyncio.sleep(self.settings.api_tail_poll_seconds)
            try:
                await self.poll()
            except Exception as exc:  # a failed poll is retried at the next tick; streams stay open
                log.warning("tail.poll_failed", error=repr(exc)[:300])

    async def poll(self) -> int:
        """One poll for every subscribed stream; returns how many frames were queued."""
        async with self._lock:
            subs = list(self._subs)
            if not subs:
                return 0
            groups: dict[str, int] = {}
            column_of: list[int] = []
            wheres: list[tuple[str, dict[str, Any]]] = []
            for sub in subs:
                key = json.dumps([sub.sq.where(), sub.sq.params], sort_keys=True, default=str)
                if key not in groups:
                    groups[key] = len(wheres)
                    wheres.append(prefixed(sub.sq, f"g{len(wheres)}_"))
                column_of.append(groups[key])
            rows = await self.runner.run(None, self._fetch, dict(self.position), wheres)
            self.polls += 1
            TAIL_POLLS.inc()
            per_column: list[list[Frame]] = [[] for _ in wheres]
            for frame, matches in self._frames(rows, len(wheres)):
                for col, hit in enumerate(matches):
                    if hit:
                        per_column[col].append(frame)
            queued = 0
            for sub, col in zip(subs, column_of, strict=True):
                if per_column[col]:
                    sub.offer(per_column[col])
                    queued += len(per_column[col])
            TAIL_EVENTS.inc(queued)
            return queued

    def _frames(self, rows: list[dict[str, Any]], n: int) -> Iterator[tuple[Frame, list[bool]]]:
        """Frames of one poll's rows, oldest first; advances :attr:`position` over every row."""
        parts: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            parts.setdefault(int(r["tail_p"]), []).append(r)
        merged = heapq.merge(*parts.values(), key=lambda r: (r["received_at"], r["tail_p"], r["tail_o"]))
        for r in merged:
            p, o = int(r["tail_p"]), int(r["tail_o"])
            self.position = tail_position.advanced(self.position, p, o)
            matches = [bool(r[f"tail_m{i}"]) for i in range(n)]
            if not any(matches):
                continue
            eid = str(r["event_id"])
            key = (str(r["org_id"]), eid)
            if key in self._recent:
                continue
            self._recent[key] = None
            if len(self._recent) > RECENT_IDS:
                self._recent.popitem(last=False)
            pos = dict(self.position)
            data = _event_json(utc_row(r), self.catalog)
            yield Frame(p, o, pos, eid, data, sse_event(self.position_id(pos), data)), matches

    def _fetch(self, position: Position, wheres: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        after, params = tail_position.after_sql(position, "a")
        cols = ", ".join(f"({w}) AS tail_m{i}" for i, (w, _) in enumerate(wheres))
        any_match = " OR ".join(f"tail_m{i}" for i in range(len(wheres)))
        for _, p in wheres:
            params.update(p)
        sql = (f"SELECT {select_list(cap_detail=True)}, kafka_partition AS tail_p, kafka_offset AS tail_o, {cols} "
               f"FROM {EVENTS_TABLE} WHERE kafka_topic = {{tail_topic:String}} AND {after} AND ({any_match} OR "
               f"(kafka_partition, kafka_offset) GLOBAL IN (SELECT kafka_partition, max(kafka_offset) "
               f"FROM {EVENTS_TABLE} WHERE kafka_topic = {{tail_topic:String}} AND {after} GROUP BY kafka_partition)) "
               f"ORDER BY kafka_partition, kafka_offset LIMIT {{tail_lim:UInt32}}")
        params.update(tail_topic=self.topic, tail_lim=POLL_ROWS, d_max=self.settings.api_list_detail_max_bytes)
        return list(self.store.client().query(sql, parameters=params).named_results())

    def _stored_position(self) -> Position:
        """Where the stored log ends now: the consumer's per-partition watermarks (a tiny table)."""
        return stored_watermarks(self.store.client(), self.topic)

    # ----- one resumed stream --------------------------------------------------------------------------------
    async def catch_up(self, sq: ScopedQuery, since: Position, upto: Position) -> AsyncIterator[CatchUpPage]:
        """SSE frames of the rows ``sq`` may see after ``since`` and at or below ``upto``, in offset order per
        partition, one chunk per page read with the position of its last frame; each frame's id is the stream's
        position after it."""
        low = dict(since)
        seen: set[tuple[str, str]] = set()
        while True:
            rows = await self.runner.run(None, self._fetch_between, sq, dict(low), upto)
            page: list[bytes] = []
            times: list[datetime] = []
            for r in rows:
                p, o = int(r["tail_p"]), int(r["tail_o"])
                low = tail_position.advanced(low, p, o)
                key = (str(r["org_id"]), str(r["event_id"]))
                if key in seen:
                    continue
                seen.add(key)
                row = utc_row(r)
                times.append(row["occurred_at"])
                page.append(sse_event(self.position_id(low), _event_json(row, self.catalog)))
            if page:
                TAIL_EVENTS.inc(len(page))
                yield CatchUpPage(b"".join(page), dict(low), len(page), min(times), max(times))
            if len(rows) < CATCH_UP_ROWS:
                return
            last_p = int(rows[-1]["tail_p"])
            for p, hi in upto.items():  # partitions before the page's last one are done
                if p < last_p:
                    low = tail_position.advanced(low, p, hi)

    def _fetch_between(self, sq: ScopedQuery, low: Position, upto: Position) -> list[dict[str, Any]]:
        between, params = tail_position.between_sql(low, upto, "b")
        params.update(sq.params)
        params.update(tail_topic=self.topic, tail_lim=CATCH_UP_ROWS, d_max=self.settings.api_list_detail_max_bytes)
        sql = (f"SELECT {select_list(cap_detail=True)}, kafka_partition AS tail_p, kafka_offset AS tail_o "
               f"FROM {EVENTS_TABLE} WHERE kafka_topic = {{tail_topic:String}} AND {between} AND {sq.where()} "
               f"ORDER BY kafka_partition, kafka_offset LIMIT {{tail_lim:UInt32}}")
        return list(self.store.client().query(sql, parameters=params).named_results())
