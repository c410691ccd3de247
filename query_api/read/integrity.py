"""Reads of ``/v1/integrity`` and ``/v1/conflicts`` for one organization, and the runs' cache.

Contract:
- :func:`org_report` is the tamper check of ``auditlog verify`` (:func:`auditlogkit.server.db.integrity.verify`) for one org, in
  the shape of ``models.IntegrityOut``: counts per :data:`auditlogkit.server.db.integrity.STATUSES`, up to 20 event ids per
  finding (only findings that occurred), ``clean``, and ``not_checked_before`` (the retention cutoff, or null);
- :func:`org_conflicts` is :func:`auditlogkit.server.db.integrity.conflicts` of one org with its times as RFC 3339 text
  (``models.ConflictOut``);
- :class:`IntegrityRuns`: :meth:`~IntegrityRuns.get` returns ``(result, cached)``; concurrent callers of one org wait
  for the single run in progress instead of starting their own; a result is reused for ``cache_s`` seconds; a
  failed run is not cached.
The org is the caller's (org owners only: :meth:`auditlogkit.query_api.security.scoping.ScopedQuery.org_wide`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from auditlogkit.schemas.event import format_ts
from auditlogkit.server.db import integrity
from auditlogkit.server.store import Store


def org_report(store: Store, org_id: str, checked_at: datetime, recheck_seconds: float) -> dict[str, Any]:
    """The integrity check of ``org_id`` as of ``checked_at`` (module contract)."""
    report = integrity.verify(store, org=org_id, now=checked_at, recheck_seconds=recheck_seconds)
    return {
        "org_id": org_id,
        "checked_at": format_ts(checked_at),
        "clean": report.clean,
        "counts": report.counts,
        "findings": {s: [eid for _, eid in report.samples.get(s, [])] for s in integrity.FINDINGS
                     if report.counts.get(s)},
        "not_checked_before": format_ts(report.cutoff) if report.cutoff else None,
    }


def org_conflicts(store: Store, org_id: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` conflicting messages of ``org_id`` (module contract)."""
    rows = integrity.conflicts(store, org_id, limit)
    for r in rows:
        r["occurred_at"], r["received_at"] = format_ts(r["occurred_at"]), format_ts(r["received_at"])
    return rows


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
