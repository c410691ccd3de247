"""The inserter: every store call of one worker runs in ONE dedicated thread with that thread's own client.

Contract:
- chDB must never share a connection across threads: this class owns a single-thread executor and only that
  thread calls ``store.client()``; the asyncio loop awaits the futures (fetching overlaps inserting). The one
  exception, :meth:`Inserter.fingerprints` (the first-write guard's read of the digests, in the background), runs
  on a second single-thread executor with that thread's own client: an insert never queues behind it;
- :meth:`Inserter.insert` writes one flush job (the Native blocks of its partition ranges, see
  :mod:`auditlogkit.consumers.decode.native`) as ONE INSERT with ``insert_deduplication_token`` = :meth:`FlushJob.dedup_token` (one
  token per block is derived from it) and the :data:`INSERT_SETTINGS`. ClickHouse drops a block whose token it
  has seen (plain MergeTree: only with the table setting ``non_replicated_deduplication_window`` > 0, which
  ``audit_events`` has; Replicated*MergeTree: ``replicated_deduplication_window`` is on by default).
  So a retry of a range whose first attempt did land (timeout after success) stores nothing twice.
  The blocks carry their column types, read once by :meth:`Inserter.column_types` (the live table's, before
  the first chunk is encoded): a change of a column's type needs a restart of the worker;
- :meth:`Inserter.stored_watermarks` returns, per partition of a topic, the highest stored ``kafka_offset``
  (from the ``audit_events_offsets`` aggregate kept by migration 0010's materialized view);
- :meth:`Inserter.fingerprints`, :meth:`Inserter.stored_hashes` and :meth:`Inserter.insert_conflicts` serve the
  first-write guard (:mod:`auditlogkit.consumers.store.first_write_guard`);
- errors propagate unchanged: the caller retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import numpy as np

from auditlogkit.consumers.store.first_write import FINGERPRINT_SQL, Conflict
from auditlogkit.schemas.rows import EVENT_COLUMNS
from auditlogkit.schemas.tables import CONFLICTS_TABLE, DIGESTS_TABLE, EVENTS_TABLE
from auditlogkit.server.db.content_hash import CONTENT_SHA256_SQL
from auditlogkit.server.db.offsets import stored_watermarks
from auditlogkit.server.logs import get_logger
from auditlogkit.server.store import Store

log = get_logger("auditlogkit.consumers.store.inserter")
#: Insert settings, each used where the store knows it. Two cut ClickHouse's work per row: no ReplacingMergeTree
#: collapse inside each inserted block (FINAL reads and merges collapse anyway) and the ngram search index built
#: by the part's first merge rather than at insert (a part not merged yet is searched without it). One is about
#: what "stored" means: on a cluster (``audit_events`` a Distributed table) the INSERT returns only once every
#: shard holds its rows, not when they are queued on the node that took the insert: offsets are committed after
#: it returns (``insert_distributed_sync`` is the older name of the same setting).
INSERT_SETTINGS: dict[str, Any] = {
    "optimize_on_insert": 0, "exclude_materialize_skip_indexes_on_insert": "idx_search",
    "distributed_foreground_insert": 1, "insert_distributed_sync": 1,
}


def _lower_priority(nice: int) -> None:
    """Run this thread (chDB's insert work happens on it) at CPU niceness ``nice``."""
    if nice:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class Inserter:
    def __init__(self, store: Store, *, dedup: bool = True, name: str = "auditlog-inserter", nice: int = 0) -> None:
        self.store = store
        self.dedup = dedup
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=_lower_priority,
                                        initargs=(nice,))
        self._name, self._nice = name, nice
        self._reader: ThreadPoolExecutor | None = None
        self._settings: dict[str, Any] | None = None
        self._column_types: tuple[str, ...] | None = None  # of EVENT_COLUMNS; read once, on the inserter thread

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _read(self, fn: Any, *args: Any) -> Any:
        """On the reader thread (created on first use): reads that must not hold up an insert."""
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self._name}-reader",
                                              initializer=_lower_priority, initargs=(self._nice,))
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    async def column_types(self) -> tuple[str, ...]:
        """The ClickHouse type names of :data:`EVENT_COLUMNS` in ``audit_events``, as the store reports them."""
        return tuple(await self._run(self._types))

    def _types(self) -> tuple[str, ...]:
        if self._column_types is None:
            ctx = self.store.client().create_insert_context(EVENTS_TABLE, list(EVENT_COLUMNS))
            self._column_types = tuple(t.name for t in ctx.column_types)
        return self._column_types

    async def insert(self, blocks: Sequence[bytes], rows: int, token: str) -> int:
        """Store ``rows`` rows given as Native ``blocks`` in one INSERT deduplicated by ``token``."""
        return int(await self._run(self._insert, blocks, rows, token))

    def _insert(self, blocks: Sequence[bytes], rows: int, token: str) -> int:
        if not rows:
            return 0
        settings: dict[str, Any] = dict(self._insert_settings())
        if self.dedup:
            settings["insert_deduplication_token"] = token
        self.store.client().raw_insert(
            EVENTS_TABLE, list(EVENT_COLUMNS), b"".join(blocks), settings=settings, fmt="Native",
        )
        return rows

    def _insert_settings(self) -> dict[str, Any]:
        """:data:`INSERT_SETTINGS`, limited to the settings this store knows (read once)."""
        if self._settings is None:
            try:
                res = self.store.client().query(
                    "SELECT name FROM system.settings WHERE name IN {names:Array(String)}",
                    parameters={"names": list(INSERT_SETTINGS)})
                known = {r[0] for r in res.result_rows}
            except Exception as exc:  # e.g. a role without access to system.settings: plain inserts then
                log.warning("insert.settings_unknown", error=f"{type(exc).__name__}: {str(exc)[:200]}")
                known = set()
            self._settings = {k: v for k, v in INSERT_SETTINGS.items() if k in known}
        return self._settings

    async def stored_watermarks(self, topic: str) -> dict[int, int]:
        return dict(await self._run(self._watermarks, topic))

    def _watermarks(self, topic: str) -> dict[int, int]:
        return stored_watermarks(self.store.client(), topic)

    async def stored_at(self, topic: str, partition: int, offset: int, event_id: str) -> bool:
        """Whether ``audit_events`` holds ``event_id`` from exactly this topic, partition and offset."""
        return bool(await self._run(self._stored_at, topic, partition, offset, event_id))

    def _stored_at(self, topic: str, partition: int, offset: int, event_id: str) -> bool:
        try:
            res = self.store.client().query(
                f"SELECT count() FROM {EVENTS_TABLE} WHERE event_id = toUUID({{eid:String}}) "
                "AND kafka_topic = {topic:String} AND kafka_partition = {p:UInt32} AND kafka_offset = {o:UInt64}",
                parameters={"eid": event_id, "topic": topic, "p": partition, "o": offset},
            )
        except Exception:
            return False
        return bool(res.result_rows[0][0])

    async def fingerprints(self, since: datetime | None, exclude: Sequence[tuple[str, int, int, int]] = ()
                           ) -> tuple[np.ndarray, datetime | None]:
        """The fingerprint of every event whose digest was recorded at or after ``since`` (None: all), but those
        from the Kafka ranges ``exclude`` ((topic, partition, first offset, last offset): this worker's own
        inserts, whose fingerprints it has), and the latest ``recorded_at`` seen (of every digest)."""
        return tuple(await self._read(self._fingerprints, since, exclude))

    def _fingerprints(self, since: datetime | None, exclude: Sequence[tuple[str, int, int, int]] = ()
                      ) -> tuple[np.ndarray, datetime | None]:
        c = self.store.client()
        params: dict[str, Any] = {"since": since} if since else {}
        where = "WHERE recorded_at >= {since:DateTime64(3, 'UTC')}" if since else ""
        others = "1"
        if exclude:
            terms = []
            for i, (topic, partition, first, last) in enumerate(exclude):
                terms.append(f"(kafka_topic = {{t{i}:String}} AND kafka_partition = {{p{i}:UInt32}} "
                             f"AND kafka_offset BETWEEN {{a{i}:UInt64}} AND {{b{i}:UInt64}})")
                params |= {f"t{i}": topic, f"p{i}": partition, f"a{i}": first, f"b{i}": last}
            others = f"NOT ({' OR '.join(terms)})"
        latest = c.query(f"SELECT max(recorded_at), count(), countIf({others}) FROM {DIGESTS_TABLE} {where}",
                         parameters=params)
        at, n, wanted = latest.result_rows[0]
        if not wanted:  # nothing new, or only this worker's own rows: one query
            return np.empty(0, np.uint64), at if n else since
        raw = c.raw_query(f"SELECT {FINGERPRINT_SQL} FROM {DIGESTS_TABLE} {where or 'WHERE 1'} AND {others}",
                          parameters=params, fmt="RowBinary")
        return np.frombuffer(raw, dtype="<u8").astype(np.uint64), at

    async def stored_hashes(self, pairs: list[tuple[str, uuid.UUID]]) -> dict[tuple[str, uuid.UUID], bytes]:
        """The content hash of the record (the earliest stored row) of each (org_id, event_id) the store has."""
        return dict(await self._run(self._stored_hashes, pairs)) if pairs else {}

    def _stored_hashes(self, pairs: list[tuple[str, uuid.UUID]]) -> dict[tuple[str, uuid.UUID], bytes]:
        res = self.store.client().query(
            f"SELECT org_id, event_id, {CONTENT_SHA256_SQL} FROM {EVENTS_TABLE} "
            "WHERE org_id IN {orgs:Array(String)} AND event_id IN {ids:Array(UUID)} "
            "ORDER BY received_at DESC, kafka_topic DESC, kafka_partition DESC, kafka_offset DESC",
            parameters={"orgs": sorted({o for o, _ in pairs}), "ids": sorted({str(e) for _, e in pairs})})
        want = set(pairs)
        out: dict[tuple[str, uuid.UUID], bytes] = {}
        for org, eid, h in res.result_rows:  # the earliest row last: it wins
            key = (org, eid if isinstance(eid, uuid.UUID) else uuid.UUID(str(eid)))
            if key in want:
                out[key] = h if isinstance(h, bytes) else bytes(h, "latin-1")
        return out

    async def insert_conflicts(self, conflicts: list[Conflict]) -> None:
        """Keep ``conflicts`` aside in ``audit_event_conflicts`` (keyed by their Kafka position: a retry adds none)."""
        if conflicts:
            await self._run(self._insert_conflicts, conflicts)

    def _insert_conflicts(self, conflicts: list[Conflict]) -> None:
        self.store.client().insert(CONFLICTS_TABLE, [c.row() for c in conflicts], column_names=list(Conflict.COLUMNS))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._reader is not None:
            self._reader.shutdown(wait=True, cancel_futures=True)
