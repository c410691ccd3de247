"""``/v1/catalog``: the scopes, categories and actions with their labels (API.md).

Contract: needs a token with ``audit:read`` like every ``/v1`` call (401/403 otherwise); not recorded (it holds no
event).
"""

from __future__ import annotations

from fastapi import APIRouter

from auditlogkit.query_api.deps import CatalogDep, ReadPrincipal
from auditlogkit.query_api.models import CatalogOut, ErrorBody

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/catalog", response_model=CatalogOut, summary="Scopes, categories, actions",
            responses={401: {"model": ErrorBody, "description": "no or invalid token"},
                       403: {"model": ErrorBody, "description": "the token lacks audit:read"}})
def get_catalog(catalog: CatalogDep, _: ReadPrincipal) -> dict[str, object]:
    return catalog.to_document()
