"""Tenant scoping: the ONE place where every read of the API gets its WHERE clause.

Contract of :class:`ScopedQuery`:
- it can only be built from a verified :class:`~query_api.auth.Principal`, and its constructor adds
  ``org_id = <caller's org>`` and, for a ``workspace_admin``, ``workspace_id IN <caller's non-empty workspaces>``
  (events without a workspace are therefore invisible to workspace admins, in ``audit_events`` where they are
  NULL and in the aggregated tables where they are ``''``). These conditions cannot be removed; every other
  condition is ANDed to them, so a caller's filters can only narrow the view;
- a filter naming another org, or (for a workspace admin) a workspace outside the token, is a 403;
- every value is a server-side bound parameter (``{name:Type}``); condition texts are constants of this
  module or of the repositories, never built from request values;
- the tenant conditions use the column names ``org_id`` and ``workspace_id`` so that the aggregated tables
  (``audit_actors``) are scoped by the very same code.
Every repository function takes a ``ScopedQuery``, never a principal or raw filters.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request

from query_api.auth import ExportPrincipal, Principal, ReadPrincipal
from query_api.errors import ApiError
from query_api.filters import EventFilters, Filters
from schemas.catalog import Catalog

# The keyword-search haystack. It is also the expression of the skipping index ``idx_search`` in
# schemas/migrations/0001_events.sql (keep both texts identical so ClickHouse can use the index).
SEARCH_EXPR = ("lowerUTF8(concat(ifNull(actor_email, ''), ' ', ifNull(target_id, ''), ' ', ifNull(target_name, ''), "
               "' ', description))")
_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*):")


def like_contains(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere (its ``%``, ``_`` and ``\\`` taken literally), lower-cased."""
    esc = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{esc}%"


class ScopedQuery:
    """WHERE conditions and their parameters, always starting with the caller's tenant scope."""

    __slots__ = ("_conds", "_params", "principal")

    def __init__(self, principal: Principal) -> None:
        if not isinstance(principal, Principal):
            raise TypeError("ScopedQuery needs a verified Principal")
        self.principal = principal
        self._conds: list[str] = ["org_id = {s_org:String}"]
        self._params: dict[str, Any] = {"s_org": principal.org_id}
        if not principal.is_owner:
            self._conds.append("workspace_id IN {s_ws:Array(String)}")
            # '' is "no workspace" in the aggregated tables, never a workspace a token can grant
            self._params["s_ws"] = [w for w in principal.workspaces if w]

    # ----- building ------------------------------------------------------------------------------
    def add(self, condition: str, **params: Any) -> ScopedQuery:
        """AND a condition; its ``{name:Type}`` placeholders must be exactly the new ``params``."""
        names = set(_PARAM.findall(condition))
        if names != set(params):
            raise ValueError(f"condition placeholders {sorted(names)} != parameters {sorted(params)}")
        clash = names & self._params.keys()
        if clash:
            raise ValueError(f"parameter names already used: {sorted(clash)}")
        self._conds.append(condition)
        self._params.update(params)
        return self

    def with_filters(self, f: EventFilters, catalog: Catalog) -> ScopedQuery:
        """AND the API filters (403 if one names another org or an unseen workspace)."""
        p = self.principal
        if f.org_id is not None and f.org_id != p.org_id:
            raise ApiError(403, "org_id names an organization this token does not belong to", field="org_id")
        if f.workspace_id is not None and not p.is_owner and f.workspace_id not in p.workspaces:
            raise ApiError(403, f"workspace {f.workspace_id!r} is not one this token may see",
                           field="workspace_id")
        self.add("occurred_at >= {f_start:DateTime64(3, 'UTC')} AND occurred_at <= {f_end:DateTime64(3, 'UTC')}",
                 f_start=f.start, f_end=f.end)
        if f.scope is not None:
            self.add("scope = {f_scope:String}", f_scope=f.scope)
        if f.category is not None:
            self.add("category = {f_category:String}", f_category=f.category)
        if f.actions:
            self.add("action IN {f_actions:Array(String)}", f_actions=list(f.actions))
        if f.status is not None:
            self.add("status = {f_status:String}", f_status=f.status)
        if f.actor_email is not None:
            self.add("actor_email = {f_email:String}", f_email=f.actor_email)
        if f.actor_id is not None:
            self.add("actor_id = {f_actor_id:String}", f_actor_id=f.actor_id)
        if f.ip is not None:
            self.add("actor_ip = {f_ip:String}", f_ip=f.ip)
        if f.workspace_id is not None:
            self.add("workspace_id = {f_ws:String}", f_ws=f.workspace_id)
        if f.target is not None:
            self.add("(target_id = {f_target:String} OR target_name = {f_target2:String})",
                     f_target=f.target, f_target2=f.target)
        if f.q is not None:
            pairs = catalog.actions_matching(f.q)
            text_cond = f"{SEARCH_EXPR} LIKE {{f_q:String}}"
            if pairs:
                self.add(f"({text_cond} OR (scope, action) IN {{f_q_pairs:Array(Tuple(String, String))}})",
                         f_q=like_contains(f.q), f_q_pairs=pairs)
            else:
                self.add(text_cond, f_q=like_contains(f.q))
        return self

    def after(self, occurred_at: datetime, event_id: uuid.UUID) -> ScopedQuery:
        """Keyset: rows strictly older than (occurred_at, event_id) in the newest-first order."""
        return self.add(
            "occurred_at <= {k_ts:DateTime64(3, 'UTC')} AND "
            "(occurred_at < {k_ts2:DateTime64(3, 'UTC')} OR event_id < {k_id:UUID})",
            k_ts=occurred_at, k_ts2=occurred_at, k_id=event_id)

    def copy(self) -> ScopedQuery:
        """An independent copy (same principal, same conditions) to extend differently."""
        other = ScopedQuery(self.principal)
        other._conds = list(self._conds)
        other._params = dict(self._params)
        return other

    # ----- reading -------------------------------------------------------------------------------
    def where(self) -> str:
        return " AND ".join(f"({c})" for c in self._conds)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._params)


def scoped_query(request: Request, principal: ReadPrincipal, filters: Filters) -> ScopedQuery:
    """Dependency: the caller's scope narrowed by the request's filters."""
    return ScopedQuery(principal).with_filters(filters, request.app.state.catalog)


def export_scoped_query(request: Request, principal: ExportPrincipal, filters: Filters) -> ScopedQuery:
    """Dependency: as :func:`scoped_query`, for a caller that also holds ``audit:export``."""
    return ScopedQuery(principal).with_filters(filters, request.app.state.catalog)


def tenant_scope(principal: ReadPrincipal) -> ScopedQuery:
    """Dependency: the caller's scope without filters (detail, autocomplete)."""
    return ScopedQuery(principal)


ScopedFilters = Annotated[ScopedQuery, Depends(scoped_query)]
ExportScope = Annotated[ScopedQuery, Depends(export_scoped_query)]
TenantScope = Annotated[ScopedQuery, Depends(tenant_scope)]
