"""``/v1/stats``: the histogram per hour/day/week/month and the top groups (API.md).

Contract: needs ``audit:read``, reads only the caller's scope narrowed by the list's filters
(:mod:`auditlogkit.query_api.security.scoping`, :mod:`auditlogkit.query_api.read.stats`) and is recorded as an ``audit_log.read`` event
before the answer is sent (:mod:`auditlogkit.query_api.security.self_audit`).
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response

from auditlogkit.query_api.deps import AuditorDep, Filters, RunnerDep, ScopedFilters
from auditlogkit.query_api.models import ERRORS, GroupBy, Interval, StatsOut
from auditlogkit.query_api.read import stats

router = APIRouter(prefix="/v1", tags=["insights"])


@router.get("/stats", response_model=StatsOut, responses=ERRORS,
            summary="Counts per hour/day and status; optional top e-mails, IPs or scopes")
async def get_stats(
    request: Request, sq: ScopedFilters, filters: Filters, runner: RunnerDep, auditor: AuditorDep,
    interval: Annotated[Interval, Query(description="bucket size")] = "day",
    group_by: Annotated[GroupBy | None, Query(
        description="also count per actor_email, ip or scope (scope: which catalog scopes have events in the "
                    "caller's view)")] = None,
    top: Annotated[int, Query(ge=1, le=100, description="how many groups")] = 10,
) -> Response:
    out = await runner.run(request, stats.compute, runner.store, sq, filters.start, filters.end, interval, group_by,
                           top)
    await auditor.record(request, sq.principal, "audit_log.read", filters=filters.describe(),
                         extra={"kind": "stats", "interval": interval, "group_by": group_by, "rows": out["total"]})
    # Built by stats.compute to StatsOut's shape; serialized here without validating up to 10,000 buckets again on
    # the event loop (response_model still documents it).
    return Response(orjson.dumps(out), media_type="application/json")
