"""``/healthz``, ``/readyz`` and ``/metrics`` (no token: for probes and Prometheus).

Contract: ``/healthz`` is 200 while the process serves; ``/readyz`` is 200 when the store answers a ping within
5 s and reads can be recorded (self-audit ``ok`` or ``off``), and, when the app was given them, the consumer's
status does not fail and every broker part is ``ok``; 503 with the same body otherwise (``models.Health``);
``/metrics`` is Prometheus' text format of the process's default registry.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from auditlogkit.query_api.deps import AuditorDep, ConsumerStatusDep, PartsStatusDep, RunnerDep
from auditlogkit.query_api.models import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, response_model_exclude_none=True, summary="The process is up")
async def healthz() -> dict[str, object]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Health,
            summary="The store answers, reads can be recorded in the audit log (and the consumer runs)",
            responses={503: {"model": Health}})
async def readyz(runner: RunnerDep, auditor: AuditorDep, consumer_status: ConsumerStatusDep,
                 parts_status: PartsStatusDep) -> Response:
    ok = await runner.run(None, runner.store.ping, timeout_s=5)
    audit_ok = await auditor.probe()
    body: dict[str, object] = {"status": "ok" if ok and audit_ok else "unavailable",
                               "store": "ok" if ok else "unreachable", "self_audit": auditor.state}
    if consumer_status is not None:
        try:
            body["consumer"] = jsonable_encoder(consumer_status())
        except Exception as exc:
            body["consumer"] = {"error": repr(exc)}
            body["status"] = "unavailable"
    if parts_status is not None:
        parts = parts_status()
        body["parts"] = parts
        if any(v != "ok" for v in parts.values()):
            body["status"] = "unavailable"
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
