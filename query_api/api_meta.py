"""The catalog, health/readiness, Prometheus metrics and the page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from query_api.deps import CatalogDep, StoreDep
from query_api.models import CatalogOut, Health

STATIC_DIR = Path(__file__).parent / "static"
router = APIRouter()


@router.get("/v1/catalog", response_model=CatalogOut, tags=["catalog"], summary="Scopes, categories, actions")
def get_catalog(catalog: CatalogDep) -> dict[str, object]:
    return catalog.to_document()


@router.get("/healthz", response_model=Health, response_model_exclude_none=True, tags=["health"],
            summary="The process is up")
def healthz() -> dict[str, object]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Health, tags=["health"], summary="The store answers (and the consumer runs)",
            responses={503: {"model": Health}})
async def readyz(request: Request, store: StoreDep) -> Response:
    ok = await run_in_threadpool(store.ping)
    body: dict[str, object] = {"status": "ok" if ok else "unavailable", "store": "ok" if ok else "unreachable",
                               # reads are served while Kafka is unreachable, but not audited: say so (not a 503)
                               "self_audit": request.app.state.self_audit}
    status_fn = request.app.state.consumer_status
    if status_fn is not None:
        try:
            body["consumer"] = jsonable_encoder(status_fn())
        except Exception as exc:
            body["consumer"] = {"error": repr(exc)}
            ok = False
            body["status"] = "unavailable"
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")
