"""Annotated dependency aliases for the app-wide objects (set on ``app.state`` by :func:`query_api.app.create_app`)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import Depends, Request

from auditlog.settings import Settings
from auditlog.store import Store
from query_api.export_slots import ExportSlots
from query_api.query_runner import QueryRunner
from query_api.self_audit import ReadAuditor
from schemas.catalog import Catalog


def from_state(name: str) -> Callable[[Request], Any]:
    """A dependency that returns ``app.state.<name>``."""

    def get(request: Request) -> Any:
        return getattr(request.app.state, name)

    get.__name__ = f"get_{name}"
    return get


StoreDep = Annotated[Store, Depends(from_state("store"))]
CatalogDep = Annotated[Catalog, Depends(from_state("catalog"))]
SettingsDep = Annotated[Settings, Depends(from_state("settings"))]
AuditorDep = Annotated[ReadAuditor, Depends(from_state("auditor"))]
RunnerDep = Annotated[QueryRunner, Depends(from_state("runner"))]
ExportSlotsDep = Annotated[ExportSlots, Depends(from_state("export_slots"))]
ExportPoolDep = Annotated[ThreadPoolExecutor, Depends(from_state("export_pool"))]
