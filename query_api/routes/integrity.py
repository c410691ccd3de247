"""``/v1/integrity``: the tamper check of ``auditlog verify`` for the caller's organization; ``/v1/conflicts``.

Contract: org owners only (the digests cover a whole organization; a workspace admin gets 403:
:meth:`~auditlogkit.query_api.security.scoping.ScopedQuery.org_wide`), with ``audit:read``; the org is the token's, never a
parameter. The answer counts the caller's events per :data:`auditlogkit.server.db.integrity.STATUSES` and lists up to 20
event ids per finding; ``clean`` is true when nothing was altered, deleted, unrecorded or conflicting. Reads only;
nothing is repaired. One run at a time per org, its result reused for ``api_integrity_cache_seconds``
(:class:`auditlogkit.query_api.read.integrity.IntegrityRuns`); each call is recorded as an ``audit_log.verify`` event.

``/v1/conflicts`` (org owners, ``audit:read``) lists the messages that reused one of the org's event ids with
other content: they were kept aside, the record is unchanged (EVENT.md, "append-only"); recorded as
``audit_log.read`` with ``kind: conflicts``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

from fastapi import APIRouter, Query, Request

from auditlogkit.query_api.deps import AuditorDep, IntegrityRunsDep, RunnerDep, TenantScope
from auditlogkit.query_api.models import ERRORS, ConflictPage, IntegrityOut
from auditlogkit.query_api.read import integrity

router = APIRouter(prefix="/v1", tags=["integrity"])


@router.get("/integrity", response_model=IntegrityOut, responses=ERRORS,
            summary="Tamper check: every stored event of your organization against its recorded content hash")
async def check_integrity(request: Request, sq: TenantScope, runner: RunnerDep, auditor: AuditorDep,
                          runs: IntegrityRunsDep) -> dict[str, object]:
    p = sq.org_wide("the integrity check covers the whole organization: only an org owner may run it")

    async def run() -> dict[str, object]:
        # not cancelled with the first caller: others of the org may be waiting for this run
        return await runner.run(None, partial(integrity.org_report, runner.store, p.org_id, datetime.now(UTC),
                                              runner.settings.integrity_recheck_seconds),
                                timeout_s=runner.settings.api_query_timeout_seconds * 4, caller=p)

    result, cached = await runs.get(p.org_id, run)
    await auditor.record(request, p, "audit_log.verify",
                         extra={"clean": result["clean"], "cached": cached, "checked_at": result["checked_at"]})
    return result


@router.get("/conflicts", response_model=ConflictPage, responses=ERRORS,
            summary="Attempted rewrites: messages that reused one of your event ids with other content (kept aside)")
async def list_conflicts(request: Request, sq: TenantScope, runner: RunnerDep, auditor: AuditorDep,
                         limit: int = Query(100, ge=1, le=500)) -> dict[str, object]:
    p = sq.org_wide("conflicts cover the whole organization: only an org owner may list them")
    rows = await runner.run(request, partial(integrity.org_conflicts, runner.store, p.org_id, limit), caller=p)
    await auditor.record(request, p, "audit_log.read", extra={"kind": "conflicts", "rows": len(rows)})
    return {"data": rows}
