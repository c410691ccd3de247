"""Annotated dependency aliases for the app-wide objects (set on ``app.state`` by :func:`query_api.app.create_app`),
the request's filters (query parameters derived from :data:`query_api.filters.FILTERS`) and the caller's scope."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import Depends, Query, Request

from auditlog.settings import Settings
from auditlog.signing import ServerKeys
from auditlog.store import Store
from query_api.auth import ExportPrincipal, ReadPrincipal
from query_api.filters import FILTERS, EventFilters, parse_filters
from query_api.query_runner import QueryRunner
from query_api.scoping import ScopedQuery
from query_api.self_audit import ReadAuditor
from query_api.slots import Slots
from query_api.tail import TailHub
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
ExportSlotsDep = Annotated[Slots, Depends(from_state("export_slots"))]
ExportPoolDep = Annotated[ThreadPoolExecutor, Depends(from_state("export_pool"))]
TailHubDep = Annotated[TailHub, Depends(from_state("tail_hub"))]
TailSlotsDep = Annotated[Slots, Depends(from_state("tail_slots"))]
ServerKeysDep = Annotated[ServerKeys, Depends(from_state("server_keys"))]


def event_filters(catalog: CatalogDep, **raw: Any) -> EventFilters:
    """Dependency: :func:`~query_api.filters.parse_filters` of the request's query parameters, one per entry of
    :data:`~query_api.filters.FILTERS` (its signature is built from the table below). A
    :class:`~query_api.filters.FilterError` becomes the usual 422/403 body (:mod:`query_api.errors`)."""
    return parse_filters(catalog, raw)


event_filters.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("catalog", inspect.Parameter.KEYWORD_ONLY, annotation=CatalogDep),
     *(inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                         annotation=Annotated[spec.type | None, Query(description=spec.help)]) for spec in FILTERS)],
    return_annotation=EventFilters)
Filters = Annotated[EventFilters, Depends(event_filters)]


def scoped_query(principal: ReadPrincipal, filters: Filters, catalog: CatalogDep) -> ScopedQuery:
    """Dependency: the caller's scope narrowed by the request's filters."""
    return ScopedQuery(principal).with_filters(filters, catalog)


def export_scoped_query(principal: ExportPrincipal, filters: Filters, catalog: CatalogDep) -> ScopedQuery:
    """Dependency: as :func:`scoped_query`, for a caller that also holds ``audit:export``."""
    return ScopedQuery(principal).with_filters(filters, catalog)


def tenant_scope(principal: ReadPrincipal) -> ScopedQuery:
    """Dependency: the caller's scope without filters (detail, autocomplete)."""
    return ScopedQuery(principal)


ScopedFilters = Annotated[ScopedQuery, Depends(scoped_query)]
ExportScope = Annotated[ScopedQuery, Depends(export_scoped_query)]
TenantScope = Annotated[ScopedQuery, Depends(tenant_scope)]
