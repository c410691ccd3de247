"""The flushing step's guard of first-write-wins: a flush's rows minus retries and conflicts.

Contract of :class:`FirstWriteGuard` (one per worker, all its assignments):
- :meth:`load` reads the fingerprint of every stored event (:mod:`auditlogkit.consumers.store.first_write`) before the first flush;
- :meth:`check` takes a :class:`~auditlogkit.consumers.batch.FlushJob` and returns a :class:`Checked`: the job's own blocks
  when no row is a suspect (the common case: one array look-up), else blocks re-encoded without the rows that
  are retries of a stored event (dropped) or :class:`~auditlogkit.consumers.store.first_write.Conflict` s (to keep aside). Its
  answer is the same for the same job and store, so a retried insert carries the same blocks and token;
- :meth:`stored` adds the fingerprints of rows the store now holds and notes the Kafka ranges they came from;
  the fingerprints other writers (other workers) add to the digests are taken in every ``refresh_seconds`` (1 s)
  by a refresh that :meth:`stored` starts in the background, after the insert (a flush does not wait for it; it
  reads only digests outside this worker's own ranges, whose fingerprints it has). A :meth:`check` refreshes
  first only when the set is older than ``2 * refresh_seconds`` (after an idle spell, or while refreshes fail):
  a check never decides on a set older than that (2 s);
- :meth:`close` cancels a refresh in flight.
Store calls run on the :class:`~auditlogkit.consumers.store.inserter.Inserter` thread; errors of :meth:`load` and :meth:`check`
propagate (the caller retries); a failed background refresh is logged and tried again later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from auditlogkit.consumers.batch import FlushJob
from auditlogkit.consumers.decode.decoder import Decoder
from auditlogkit.consumers.decode.native import NativeEncoder
from auditlogkit.consumers.store.first_write import Conflict, KnownIds, keys_array, resolve, suspects
from auditlogkit.consumers.store.inserter import Inserter
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.schemas.rows import EVENT_COLUMNS
from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.consumers.store.first_write_guard")
_ORG, _EVENT_ID = EVENT_COLUMNS.index("org_id"), EVENT_COLUMNS.index("event_id")


@dataclass(slots=True)
class Checked:
    blocks: list[bytes]
    rows: int
    keys: np.ndarray  # fingerprints of the rows in ``blocks``
    conflicts: list[Conflict] = field(default_factory=list)
    retries: int = 0


class FirstWriteGuard:
    def __init__(self, inserter: Inserter, catalog: Catalog, type_names: Sequence[str], *,
                 refresh_seconds: float = 1.0) -> None:
        self.inserter = inserter
        self.known = KnownIds()
        self.refresh_seconds = refresh_seconds
        self._decoder = Decoder(catalog)
        self._encoder = NativeEncoder(type_names)
        self._since: datetime | None = None
        self._fresh_at = float("-inf")  # monotonic start of the last refresh that succeeded
        self._task: asyncio.Task[None] | None = None  # the background refresh in flight
        self._mine: dict[tuple[str, int], list[list[float]]] = {}  # (topic, partition) -> [first, last, when]

    async def load(self) -> None:
        t0 = time.perf_counter()
        started = time.monotonic()
        keys, latest = await self.inserter.fingerprints(None)
        self.known = KnownIds(keys)
        self._since = latest
        self._fresh_at = started
        log.info("first_write.loaded", events=len(self.known), ms=round((time.perf_counter() - t0) * 1000, 1))

    async def _refresh(self) -> None:
        started = time.monotonic()
        since = self._since - timedelta(seconds=10) if self._since is not None else None  # late digests too
        keys, latest = await self.inserter.fingerprints(since, self._own_ranges(started))
        self.known.add(self.known.unknown(keys))  # the 10 s overlap reads other writers' recent keys again
        if latest is not None:
            self._since = latest
        self._fresh_at = max(self._fresh_at, started)

    async def _refresh_quietly(self) -> None:
        try:
            await self._refresh()
        except Exception as exc:  # the store is failing: the next insert retries, a check refreshes when stale
            log.warning("first_write.refresh_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        finally:
            self._task = None

    def _own_ranges(self, now: float) -> list[tuple[str, int, int, int]]:
        """The Kafka ranges this worker inserted in the last minute (their digests fall in a refresh's window)."""
        out = []
        for (topic, partition), ranges in list(self._mine.items()):
            ranges[:] = [r for r in ranges if now - r[2] < 60.0]
            if not ranges:
                del self._mine[(topic, partition)]
            out += [(topic, partition, int(r[0]), int(r[1])) for r in ranges]
        return out

    def stored(self, keys: np.ndarray, job: FlushJob | None = None) -> None:
        """After ``job``'s insert: ``keys`` are stored; its ranges are this worker's (a refresh skips them)."""
        self.known.add(keys)
        now = time.monotonic()
        for b in job.batches if job is not None else ():
            # offsets at or below the stored watermark were skipped: stored before, maybe by another worker
            first = max(b.first, 1 + max((c.stored_up_to for c in b.sources), default=-1))
            if b.last < first:
                continue
            ranges = self._mine.setdefault((b.tp.topic, b.tp.partition), [])
            last = ranges[-1] if ranges else None
            if last is not None and first <= last[1] + 1 and b.last >= last[0] - 1:  # adjoining: one range
                last[0], last[1], last[2] = min(last[0], first), max(last[1], b.last), now
            else:
                ranges.append([first, b.last, now])
        if self._task is None and now - self._fresh_at >= self.refresh_seconds:  # due: runs while the next batch grows
            self._task = asyncio.get_running_loop().create_task(self._refresh_quietly(), name="first-write-refresh")

    async def check(self, job: FlushJob) -> Checked:
        if time.monotonic() - self._fresh_at > 2 * self.refresh_seconds:  # stale: idle, or refreshes failing
            if self._task is not None:
                await asyncio.shield(self._task)
            if time.monotonic() - self._fresh_at > 2 * self.refresh_seconds:
                await self._refresh()
        keys = keys_array(k for b in job.batches for k in b.keys)
        sus = suspects(self.known, keys)
        if not sus.size:
            return Checked(job.blocks, job.rows, keys)
        return await self._resolve(job, keys, sus)

    async def _resolve(self, job: FlushJob, keys: np.ndarray, sus: np.ndarray) -> Checked:
        """The slow path: decode again here only the chunks that hold a suspect, decide the suspects exactly,
        re-encode those chunks without what is dropped; every other block goes as it was."""
        sources = [(chunk, block) for b in job.batches for chunk, block in zip(b.sources, b.blocks, strict=True)]
        bounds = np.cumsum([0] + [len(k) // 8 for b in job.batches for k in b.keys])
        hit = set(np.searchsorted(bounds, sus, side="right").tolist())  # 1-based index of each suspect's chunk
        decoded = {j: self._decoder.stored_rows(sources[j - 1][0]) for j in hit}
        rows = {int(i): decoded[int(j)][int(i) - int(bounds[j - 1])]
                for i, j in zip(sus, np.searchsorted(bounds, sus, side="right"), strict=True)}
        pairs = sorted({(r[_ORG], r[_EVENT_ID]) for r in rows.values()})
        stored = await self.inserter.stored_hashes(pairs)
        keep_sus, conflicts, retries = resolve([rows[int(i)] for i in sus], EVENT_COLUMNS, stored)
        drop = set(sus.tolist()) - {int(sus[i]) for i in keep_sus}
        blocks: list[bytes] = []
        keep = np.ones(keys.size, dtype=bool)
        keep[sorted(drop)] = False
        for j, (_chunk, block) in enumerate(sources, 1):
            if j not in hit:
                blocks.append(block)
                continue
            kept = [r for k, r in enumerate(decoded[j], int(bounds[j - 1])) if k not in drop]
            if kept:
                blocks.append(self._encoder.encode(kept))
        log.info("first_write.resolved", suspects=int(sus.size), retries=retries, conflicts=len(conflicts))
        return Checked(blocks, int(keep.sum()), keys[keep], conflicts, retries)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
