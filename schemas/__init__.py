"""The event contract shared by producers, consumer, store and API: models, catalog, JSON Schema, DDL."""

from auditlogkit.schemas.catalog import Catalog, CatalogError, get_catalog
from auditlogkit.schemas.event import AuditEvent, EventError, Status, as_utc, format_ts, parse_event

__all__ = ["AuditEvent", "Catalog", "CatalogError", "EventError", "Status", "as_utc", "format_ts", "get_catalog",
           "parse_event"]
