"""``/v1/actors`` (e-mail autocomplete) and ``/v1/stats`` (histogram and top groups).

Contract: both need ``audit:read``, read only the caller's scope (:mod:`query_api.scoping`) and are recorded as an
``audit_log.read`` event before the answer is sent (:mod:`query_api.self_audit`).
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response

from query_api import actors, stats
from query_api.deps import AuditorDep, Filters, RunnerDep, ScopedFilters, TenantScope
from query_api.errors import ERRORS, invalid
from query_api.filters import clean_text
from query_api.models import ActorPage, GroupBy, Interval, StatsOut

router = APIRouter(prefix="/v1", tags=["insights"])


@router.get("/actors", response_model=ActorPage, responses=ERRORS, summary="Autocomplete of actor e-mails")
async def suggest_actors(
    request: Request, sq: TenantScope, runner: RunnerDep, auditor: AuditorDep,
    prefix: Annotated[str, Query(description=f"at least {actors.MIN_PREFIX} characters", max_length=254)],
) -> dict[str, object]:
    p = clean_text("prefix", prefix.strip())
    if p is None or len(p) < actors.MIN_PREFIX:
        raise invalid("prefix", f"prefix needs at least {actors.MIN_PREFIX} characters")
    data = await runner.run(request, actors.suggest, runner.store, sq, p)
    await auditor.record(request, sq.principal, "audit_log.read", extra={"kind": "actors", "prefix": p,
                                                                          "rows": len(data)})
    return {"data": data, "next_cursor": None}


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
