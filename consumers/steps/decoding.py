"""Decoding step: runs of fetched records -> :class:`~auditlogkit.consumers.steps.Decoded`, in submission order.

Records are cut into chunks of ``chunk_messages`` carrying the partition's watermarks and handed to the decode
pool (helper processes, or this process in slices that let the event loop run in between); results go on in
the order the runs were submitted, whatever order the pool finishes them in.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from auditlogkit.consumers import metrics as m
from auditlogkit.consumers.decode.decoder import Chunk, DecodedChunk
from auditlogkit.consumers.decode.pool import DecodePool
from auditlogkit.consumers.steps import Decoded, Fetched, Step
from auditlogkit.server.provenance import KAFKA, Publisher, publisher_of
from auditlogkit.server.signing import ServerKeys


class Decoding:
    def __init__(self, pool: DecodePool, next_step: Step[Decoded], chunk_messages: int = 500,
                 keys: ServerKeys | None = None) -> None:
        self.pool = pool
        self.keys = keys
        self.next = next_step
        self.chunk_messages = chunk_messages
        self._queue: deque[tuple[Fetched, list[Chunk], asyncio.Future[list[DecodedChunk]]]] = deque()
        self._held = 0

    def submit(self, item: Fetched) -> None:
        recs, wm, tp = item.records, item.state.watermarks, item.state.tp
        at = datetime.now(UTC)
        n = self.chunk_messages
        chunks = [
            Chunk(tp.topic, tp.partition, [r.offset for r in piece], [r.value for r in piece], at, wm.stored, wm.dead,
                  self._publishers(piece))
            for piece in (recs[i : i + n] for i in range(0, len(recs), n))
        ]
        task = asyncio.ensure_future(self.pool.decode(chunks))
        t0 = time.perf_counter()
        task.add_done_callback(lambda _t: m.DECODE_SECONDS.observe(time.perf_counter() - t0))
        self._queue.append((item, chunks, task))
        self._held += len(recs)

    def _publishers(self, records: list[Any]) -> list[Publisher] | None:
        """The verified publisher of each record (:mod:`auditlogkit.server.provenance`); None when none has headers."""
        keys = self.keys
        if keys is None or not any(r.headers for r in records):
            return None
        return [publisher_of(keys, r.headers, r.value) if r.headers else KAFKA for r in records]

    def poll(self) -> None:
        q = self._queue
        while q and q[0][2].done():
            item, chunks, task = q.popleft()
            self._held -= len(item.records)
            self.next.submit(Decoded(item.state, item.records, chunks, task.result()))
        self.next.poll()

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    async def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if self._queue:
            _, pending = await asyncio.wait([t for _, _, t in self._queue], timeout=timeout)
            if pending:
                return False
        self.poll()
        return await self.next.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for _, _, task in self._queue:
            task.cancel()
        self._queue.clear()
        self._held = 0
        self.next.close()

    def held(self) -> int:
        return self._held + self.next.held()
