"""The flushing step's guard of first-write-wins: a flush's rows minus retries and conflicts.

Contract of :class:`FirstWriteGuard` (one per worker, all its assignments):
- :meth:`load` reads the fingerprint of every stored event (:mod:`consumers.first_write`) before the first flush;
- :meth:`check` takes a :class:`~consumers.batch.FlushJob` and returns a :class:`Checked`: the job's own blocks
  when no row is a suspect (the common case: one array look-up), else blocks re-encoded without the rows that
  are retries of a stored event (dropped) or :class:`~consumers.first_write.Conflict` s (to keep aside). Its
  answer is the same for the same job and store, so a retried insert carries the same blocks and token;
- :meth:`stored` adds the fingerprints of rows the store now holds; every ``refresh_seconds`` :meth:`check`
  also takes in the fingerprints other writers (other workers) added to the digests.
Store calls run on the :class:`~consumers.inserter.Inserter` thread; errors propagate (the caller retries).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from auditlog.logs import get_logger
from consumers.batch import FlushJob
from consumers.decode import DecodeStep
from consumers.first_write import Conflict, KnownIds, keys_array, resolve, suspects
from consumers.inserter import Inserter
from consumers.native import NativeEncoder
from schemas.catalog import Catalog
from schemas.rows import EVENT_COLUMNS

log = get_logger("consumers.first_write_guard")
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
                 refresh_seconds: float = 2.0) -> None:
        self.inserter = inserter
        self.known = KnownIds()
        self.refresh_seconds = refresh_seconds
        self._step = DecodeStep(catalog)
        self._encoder = NativeEncoder(type_names)
        self._since: datetime | None = None
        self._next_refresh = 0.0

    async def load(self) -> None:
        t0 = time.perf_counter()
        keys, latest = await self.inserter.fingerprints(None)
        self.known = KnownIds(keys)
        self._since = latest
        self._next_refresh = time.monotonic() + self.refresh_seconds
        log.info("first_write.loaded", events=len(self.known), ms=round((time.perf_counter() - t0) * 1000, 1))

    async def _refresh(self) -> None:
        if time.monotonic() < self._next_refresh:
            return
        since = self._since - timedelta(seconds=10) if self._since is not None else None  # late digests too
        keys, latest = await self.inserter.fingerprints(since)
        self.known.add(keys)
        if latest is not None:
            self._since = latest
        self._next_refresh = time.monotonic() + self.refresh_seconds

    def stored(self, keys: np.ndarray) -> None:
        self.known.add(keys)

    async def check(self, job: FlushJob) -> Checked:
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
        decoded = {j: self._step.stored_rows(sources[j - 1][0]) for j in hit}
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
