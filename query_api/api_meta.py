"""The catalog, health/readiness, Prometheus metrics, the page and the API docs.

Contract: ``/v1/catalog`` needs a token with ``audit:read`` like every ``/v1`` call (401/403 otherwise);
``/docs`` is Swagger UI 5 (its files from the ``fastapi-offline`` package) served under ``/docs/assets/`` and
started by ``static/docs/docs.js``: nothing from another host, no inline script. With ``settings.api_docs`` off,
``/docs`` and its assets answer 404 with the JSON error body (``/openapi.json`` is switched off in ``create_app``).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from auditlog.settings import Settings
from query_api.auth import ReadPrincipal
from query_api.deps import AuditorDep, CatalogDep, RunnerDep, SettingsDep
from query_api.errors import ApiError, ErrorBody
from query_api.models import CatalogOut, Health

STATIC_DIR = Path(__file__).parent / "static"
SWAGGER_UI_DIR = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js"})
router = APIRouter()


@router.get("/v1/catalog", response_model=CatalogOut, tags=["catalog"], summary="Scopes, categories, actions",
            responses={401: {"model": ErrorBody, "description": "no or invalid token"},
                       403: {"model": ErrorBody, "description": "the token lacks audit:read"}})
def get_catalog(catalog: CatalogDep, _: ReadPrincipal) -> dict[str, object]:
    return catalog.to_document()


@router.get("/healthz", response_model=Health, response_model_exclude_none=True, tags=["health"],
            summary="The process is up")
async def healthz() -> dict[str, object]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Health, tags=["health"],
            summary="The store answers, reads can be recorded in the audit log (and the consumer runs)",
            responses={503: {"model": Health}})
async def readyz(request: Request, runner: RunnerDep, auditor: AuditorDep) -> Response:
    ok = await runner.run(None, runner.store.ping, timeout_s=5)
    audit_ok = await auditor.probe()
    body: dict[str, object] = {"status": "ok" if ok and audit_ok else "unavailable",
                               "store": "ok" if ok else "unreachable", "self_audit": auditor.state}
    status_fn = request.app.state.consumer_status
    if status_fn is not None:
        try:
            body["consumer"] = jsonable_encoder(status_fn())
        except Exception as exc:
            body["consumer"] = {"error": repr(exc)}
            body["status"] = "unavailable"
    parts_fn = request.app.state.parts_status
    if parts_fn is not None:
        parts = parts_fn()
        body["parts"] = parts
        if any(v != "ok" for v in parts.values()):
            body["status"] = "unavailable"
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


@router.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


def _docs_on(settings: Settings) -> None:
    if not settings.api_docs:
        raise ApiError(404, "no such resource")


@router.get("/docs", include_in_schema=False)
def docs(settings: SettingsDep) -> FileResponse:
    _docs_on(settings)
    return FileResponse(STATIC_DIR / "docs" / "index.html", media_type="text/html; charset=utf-8")


@router.get("/docs/assets/{name}", include_in_schema=False)
def docs_asset(name: str, settings: SettingsDep) -> FileResponse:
    _docs_on(settings)
    if name not in DOCS_ASSETS:
        raise ApiError(404, "no such resource")
    return FileResponse(SWAGGER_UI_DIR / name)
