"""Annotated dependency aliases for the app-wide objects (set on ``app.state`` by :func:`query_api.app.create_app`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import Depends, Request

from auditlog.settings import Settings
from auditlog.store import Store
from producers.producer import AuditProducer
from schemas.catalog import Catalog


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_catalog_dep(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    return catalog


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_producer(request: Request) -> AuditProducer | None:
    producer: AuditProducer | None = request.app.state.producer
    return producer


def get_export_pool(request: Request) -> ThreadPoolExecutor:
    pool: ThreadPoolExecutor = request.app.state.export_pool
    return pool


StoreDep = Annotated[Store, Depends(get_store)]
CatalogDep = Annotated[Catalog, Depends(get_catalog_dep)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ProducerDep = Annotated[AuditProducer | None, Depends(get_producer)]
ExportPoolDep = Annotated[ThreadPoolExecutor, Depends(get_export_pool)]
