"""``/v1/actors``: autocomplete of actor e-mails (API.md).

Contract: needs ``audit:read``, reads only the caller's scope (:mod:`auditlogkit.query_api.security.scoping`,
:mod:`auditlogkit.query_api.read.actors`) and is recorded as an ``audit_log.read`` event before the answer is sent
(:mod:`auditlogkit.query_api.security.self_audit`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from auditlogkit.query_api.core.errors import invalid
from auditlogkit.query_api.deps import ActorsWindowDep, AuditorDep, RunnerDep, TenantScope
from auditlogkit.query_api.models import ERRORS, ActorPage
from auditlogkit.query_api.read import actors
from auditlogkit.query_api.read.filters import clean_text

router = APIRouter(prefix="/v1", tags=["insights"])


@router.get("/actors", response_model=ActorPage, responses=ERRORS, summary="Autocomplete of actor e-mails")
async def suggest_actors(
    request: Request, sq: TenantScope, runner: RunnerDep, auditor: AuditorDep, window: ActorsWindowDep,
    prefix: Annotated[str, Query(description=f"at least {actors.MIN_PREFIX} characters", max_length=254)],
) -> dict[str, object]:
    p = clean_text("prefix", prefix.strip())
    if p is None or len(p) < actors.MIN_PREFIX:
        raise invalid("prefix", f"prefix needs at least {actors.MIN_PREFIX} characters")
    data = await runner.run(request, actors.read_suggest, window, runner.store, sq, p)
    await auditor.record(request, sq.principal, "audit_log.read", extra={"kind": "actors", "prefix": p,
                                                                          "rows": len(data)})
    return {"data": data, "next_cursor": None}
