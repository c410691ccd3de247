"""``/v1/integrity`` runs: one at a time per organization, the result reused for ``cache_s`` seconds.

Contract of :class:`IntegrityRuns`: :meth:`get` returns ``(result, cached)``; concurrent callers of one org wait
for the single run in progress instead of starting their own; a failed run is not cached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


class IntegrityRuns:
    def __init__(self, cache_s: float, *, max_orgs: int = 10_000) -> None:
        self.cache_s = cache_s
        self.max_orgs = max_orgs
        self._locks: dict[str, asyncio.Lock] = {}
        self._done: dict[str, tuple[float, dict[str, Any]]] = {}

    async def get(self, org: str, run: Callable[[], Awaitable[dict[str, Any]]]) -> tuple[dict[str, Any], bool]:
        lock = self._locks.setdefault(org, asyncio.Lock())
        async with lock:
            hit = self._done.get(org)
            if hit is not None and time.monotonic() - hit[0] < self.cache_s:
                return hit[1], True
            result = await run()
            if len(self._done) >= self.max_orgs:
                self._done.clear()
            self._done[org] = (time.monotonic(), result)
            return result, False
