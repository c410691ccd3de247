"""The page at ``/`` and the API docs at ``/docs`` (``/static`` is mounted by :func:`auditlogkit.query_api.core.app.create_app`).

Contract: ``/`` is ``query_api/static/index.html`` (:data:`STATIC_DIR`); ``/docs`` is Swagger UI 5 (its files from
the ``fastapi-offline`` package) served under ``/docs/assets/`` and started by ``static/docs/docs.js``: nothing from
another host, no inline script. With ``settings.api_docs`` off, ``/docs`` and its assets answer 404 with the JSON
error body (``/openapi.json`` is switched off in ``create_app``).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.responses import FileResponse

from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.deps import SettingsDep
from auditlogkit.server.settings import Settings

STATIC_DIR = Path(__file__).parents[1] / "static"
SWAGGER_UI_DIR = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js"})
router = APIRouter(include_in_schema=False)


@router.get("/")
def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


def _docs_on(settings: Settings) -> None:
    if not settings.api_docs:
        raise ApiError(404, "no such resource")


@router.get("/docs")
def docs(settings: SettingsDep) -> FileResponse:
    _docs_on(settings)
    return FileResponse(STATIC_DIR / "docs" / "index.html", media_type="text/html; charset=utf-8")


@router.get("/docs/assets/{name}")
def docs_asset(name: str, settings: SettingsDep) -> FileResponse:
    _docs_on(settings)
    if name not in DOCS_ASSETS:
        raise ApiError(404, "no such resource")
    return FileResponse(SWAGGER_UI_DIR / name)
