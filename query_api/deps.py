"""The API's FastAPI dependencies, as ``Annotated`` aliases: the app-wide objects, the caller, its filters and scope.

Contract:
- this is the one module that reads ``request.app.state`` (set by :func:`auditlogkit.query_api.core.app.create_app`): every
  app-wide object is a ``<Name>Dep`` alias of :func:`from_state`;
- the caller: :func:`current_principal` verifies the bearer token (401 without a valid one, with
  ``WWW-Authenticate: Bearer``), records it for the access log and takes a token of the app's ``rate_limiter``
  (429); :data:`ReadPrincipal` also needs ``audit:read``, :data:`ExportPrincipal` ``audit:read`` and
  ``audit:export`` (403 otherwise); :data:`WritePrincipal` is a service token with ``audit:write`` within the
  ``ingest_rate_limiter`` (a read token: 403, :mod:`auditlogkit.query_api.security.auth`); :data:`StreamPrincipal` is an org
  owner with ``audit:stream`` (a workspace admin, or an owner without it: 403);
- :data:`StreamsDep` is the log streams' repository (:class:`~auditlogkit.query_api.streams.store.StreamStore`): 503
  ``streams_unavailable`` when the app has none (no streams key);
- the request's filters: :data:`Filters`, query parameters derived from :data:`auditlogkit.query_api.read.filters.FILTERS`;
- the caller's scope (:class:`~auditlogkit.query_api.security.scoping.ScopedQuery`): :data:`TenantScope` (no filters),
  :data:`ScopedFilters` and :data:`ExportScope` (narrowed by the filters).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from auditlogkit.producer import AuditProducer
from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.core.query_runner import QueryRunner
from auditlogkit.query_api.read.actors import ActorsWindow
from auditlogkit.query_api.read.filters import FILTERS, EventFilters, parse_filters
from auditlogkit.query_api.read.integrity import IntegrityRuns
from auditlogkit.query_api.read.recent import PageWindow
from auditlogkit.query_api.read.tail import TailHub
from auditlogkit.query_api.security.auth import TokenVerifier, unauthorized
from auditlogkit.query_api.security.principal import EXPORT, READ, STREAM, WRITE, Principal, ServicePrincipal
from auditlogkit.query_api.security.ratelimit import RateLimiter
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.query_api.security.self_audit import ReadAuditor
from auditlogkit.query_api.security.slots import Slots
from auditlogkit.query_api.streams.store import StreamStore
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.server.settings import Settings
from auditlogkit.server.signing import ServerKeys
from auditlogkit.server.store import Store


def from_state(name: str) -> Callable[[Request], Any]:
    """A dependency that returns ``app.state.<name>``."""

    def get(request: Request) -> Any:
        return getattr(request.app.state, name)

    get.__name__ = f"get_{name}"
    return get


StoreDep = Annotated[Store, Depends(from_state("store"))]
CatalogDep = Annotated[Catalog, Depends(from_state("catalog"))]
SettingsDep = Annotated[Settings, Depends(from_state("settings"))]
ServerKeysDep = Annotated[ServerKeys, Depends(from_state("server_keys"))]
AuditorDep = Annotated[ReadAuditor, Depends(from_state("auditor"))]
RunnerDep = Annotated[QueryRunner, Depends(from_state("runner"))]
PageWindowDep = Annotated[PageWindow | None, Depends(from_state("page_window"))]
ActorsWindowDep = Annotated[ActorsWindow | None, Depends(from_state("actors_window"))]
VerifierDep = Annotated[TokenVerifier, Depends(from_state("verifier"))]
RateLimiterDep = Annotated[RateLimiter, Depends(from_state("rate_limiter"))]
IngestRateLimiterDep = Annotated[RateLimiter, Depends(from_state("ingest_rate_limiter"))]
ExportSlotsDep = Annotated[Slots, Depends(from_state("export_slots"))]
ExportPoolDep = Annotated[ThreadPoolExecutor, Depends(from_state("export_pool"))]
TailHubDep = Annotated[TailHub, Depends(from_state("tail_hub"))]
TailSlotsDep = Annotated[Slots, Depends(from_state("tail_slots"))]
IngestSlotsDep = Annotated[Slots, Depends(from_state("ingest_slots"))]
IngestPoolDep = Annotated[ThreadPoolExecutor, Depends(from_state("ingest_pool"))]
#: the producer of ``POST /v1/ingest``; None until ``auditlogkit.query_api.cli`` attaches it (ingest answers 503 meanwhile)
IngestProducerDep = Annotated[AuditProducer | None, Depends(from_state("ingest_producer"))]
IntegrityRunsDep = Annotated[IntegrityRuns, Depends(from_state("integrity_runs"))]
ConsumerStatusDep = Annotated[Callable[[], dict] | None, Depends(from_state("consumer_status"))]
PartsStatusDep = Annotated[Callable[[], dict[str, str]] | None, Depends(from_state("parts_status"))]


def streams_repository(request: Request) -> StreamStore:
    """``app.state.streams``, or 503 ``streams_unavailable`` (with why) when the app has no streams key."""
    repo: StreamStore | None = request.app.state.streams
    if repo is None:
        raise ApiError(503, "log streams are not available on this server: "
                            f"{request.app.state.streams_unavailable}", code="streams_unavailable")
    return repo


StreamsDep = Annotated[StreamStore, Depends(streams_repository)]


# ----- the caller ---------------------------------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False, description="JWT per API.md (HS256 or RS256)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token(creds: HTTPAuthorizationCredentials | None) -> str:
    if creds is None or not creds.credentials:
        raise unauthorized("missing bearer token (Authorization: Bearer <JWT>)")
    return creds.credentials


def current_principal(request: Request, creds: Credentials, verifier: VerifierDep,
                      limiter: RateLimiterDep) -> Principal:
    """The verified caller of this request (401 without a valid bearer token; 429 over its rate limit)."""
    principal = verifier.verify(_token(creds))
    request.state.principal = principal  # for the access log (sub and org only) and the query fair share
    limiter.check(principal)
    return principal


def require(permission: str) -> Callable[..., Principal]:
    """A dependency that lets the caller through only with ``permission`` (403 otherwise), and then only with query
    parameters the route takes (:func:`known_query_parameters`)."""

    def check(request: Request, principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.can(permission):
            raise ApiError(403, f"this token lacks the permission {permission!r}")
        known_query_parameters(request)
        return principal

    check.__name__ = f"require_{permission.replace(':', '_')}"
    return check


def _require_read_and_export(principal: Annotated[Principal, Depends(require(READ))]) -> Principal:
    if not principal.can(EXPORT):
        raise ApiError(403, f"this token lacks the permission {EXPORT!r}")
    return principal


async def service_principal(request: Request, creds: Credentials, verifier: VerifierDep,
                            limiter: IngestRateLimiterDep) -> ServicePrincipal:
    """The verified service of this request: 401 without a valid bearer token, 403 for a read token or without
    ``audit:write``, 429 over the ingest rate limit of its ``sub``."""
    token = _token(creds)
    if verifier.remote_jwks is not None:  # may fetch keys: never on the event loop
        principal = await run_in_threadpool(verifier.verify_service, token)
    else:
        principal = verifier.verify_service(token)
    request.state.principal = principal  # for the access log (sub only)
    limiter.check(principal.as_caller())
    if not principal.can(WRITE):
        raise ApiError(403, f"this token lacks the permission {WRITE!r}")
    return principal


def _require_stream_owner(principal: Annotated[Principal, Depends(require(STREAM))]) -> Principal:
    if not principal.is_owner:
        raise ApiError(403, "log streams carry a whole organization's events: only an org owner may manage them")
    return principal


ReadPrincipal = Annotated[Principal, Depends(require(READ))]
ExportPrincipal = Annotated[Principal, Depends(_require_read_and_export)]
WritePrincipal = Annotated[ServicePrincipal, Depends(service_principal)]
StreamPrincipal = Annotated[Principal, Depends(_require_stream_owner)]


# ----- the request's filters and the caller's scope ------------------------------------------------------------
def known_query_parameters(request: Request) -> None:
    """422 naming a query parameter the route does not take: a misspelt filter (``target_id`` for ``target``) must
    not silently widen an answer. Run after authentication (by :func:`require`), so an anonymous caller learns
    nothing first."""
    route = request.scope.get("route")
    if route is None:
        return
    takes = declared_query_parameters(route)
    unknown = sorted(set(request.query_params) - takes)
    if unknown:
        name = unknown[0] if len(unknown[0]) <= 64 else unknown[0][:64] + "…"  # echoed: bounded
        raise ApiError(422, f"unknown query parameter {name!r}; this endpoint takes: "
                            f"{', '.join(sorted(takes)) or 'none'}", field=name)


def declared_query_parameters(route: Any) -> frozenset[str]:
    """The query parameters ``route`` takes: its own and those of every dependency (kept on the route)."""
    names: frozenset[str] | None = getattr(route, "_auditlog_query_names", None)
    if names is None:
        found: set[str] = set()
        todo = [route.dependant]
        while todo:
            d = todo.pop()
            found.update(f.alias for f in d.query_params)
            todo.extend(d.dependencies)
        names = frozenset(found)
        route._auditlog_query_names = names
    return names


def event_filters(catalog: CatalogDep, **raw: Any) -> EventFilters:
    """Dependency: :func:`~auditlogkit.query_api.read.filters.parse_filters` of the request's query parameters, one per entry of
    :data:`~auditlogkit.query_api.read.filters.FILTERS` (its signature is built from the table below). A
    :class:`~auditlogkit.query_api.read.filters.FilterError` becomes the usual 422/403 body (:mod:`auditlogkit.query_api.core.errors`)."""
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
    """Dependency: the caller's scope without filters (detail, autocomplete, integrity)."""
    return ScopedQuery(principal)


ScopedFilters = Annotated[ScopedQuery, Depends(scoped_query)]
ExportScope = Annotated[ScopedQuery, Depends(export_scoped_query)]
TenantScope = Annotated[ScopedQuery, Depends(tenant_scope)]
