"""Tenant scoping: the ONE place where every read of the API gets its WHERE clause.

Contract of :class:`ScopedQuery`:
- it can only be built from a verified :class:`~auditlogkit.query_api.security.principal.Principal`, and its constructor adds
  ``org_id = <caller's org>`` and, for a ``workspace_admin``, ``workspace_id IN <caller's non-empty workspaces>``
  (events without a workspace are therefore invisible to workspace admins, in ``audit_events`` where they are
  NULL and in the aggregated tables where they are ``''``). These conditions cannot be removed; every other
  condition is ANDed to them, so a caller's filters can only narrow the view;
- :meth:`ScopedQuery.with_filters` ANDs the conditions of the filters (declared in :mod:`auditlogkit.query_api.read.filters`);
  a filter naming another org, or (for a workspace admin) a workspace outside the token, is a
  :class:`~auditlogkit.query_api.read.filters.FilterError` with ``forbidden`` (the API answers 403);
- every value is a server-side bound parameter (``{name:Type}``); condition texts are constants of this
  module, of the filter table or of the repositories, never built from request values;
- the tenant conditions use the column names ``org_id`` and ``workspace_id`` so that the aggregated tables
  (``audit_actors``) are scoped by the very same code; :meth:`ScopedQuery.aggregated` states for them again that
  a workspace admin never sees their rows of no workspace (``''``);
- what covers a whole organization (the integrity check, the conflicts) is for org owners only:
  :meth:`ScopedQuery.org_wide` returns the caller or raises 403.
Every repository function takes a ``ScopedQuery``, never a principal or raw filters. The FastAPI dependencies
that build one per request are in :mod:`auditlogkit.query_api.deps`.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.read.filters import EventFilters, FilterError
from auditlogkit.query_api.security.principal import Principal
from auditlogkit.schemas.catalog import Catalog

_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*):")


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
        """AND the filters' conditions (``forbidden`` FilterError if one names another org or an unseen workspace)."""
        p = self.principal
        org, ws = f.get("org_id"), f.get("workspace_id")
        if org is not None and org != p.org_id:
            raise FilterError("org_id", "org_id names an organization this token does not belong to", forbidden=True)
        if ws is not None and not p.is_owner and ws not in p.workspaces:
            raise FilterError("workspace_id", f"workspace {ws!r} is not one this token may see", forbidden=True)
        for condition, params in f.conditions(catalog):
            self.add(condition, **params)
        return self

    def after(self, occurred_at: datetime, event_id: uuid.UUID) -> ScopedQuery:
        """Keyset: rows strictly older than (occurred_at, event_id) in the newest-first order."""
        return self.add(
            "occurred_at <= {k_ts:DateTime64(3, 'UTC')} AND "
            "(occurred_at < {k_ts2:DateTime64(3, 'UTC')} OR event_id < {k_id:UUID})",
            k_ts=occurred_at, k_ts2=occurred_at, k_id=event_id)

    def aggregated(self) -> ScopedQuery:
        """For an aggregated table, where ``''`` is "no workspace": a workspace admin's scope leaves those rows out
        (its ``workspace_id IN`` never grants ``''`` already; this says it in the query too)."""
        if not self.principal.is_owner:
            self.add("workspace_id != ''")
        return self

    def org_wide(self, refusal: str) -> Principal:
        """The caller, when it may read what covers its whole organization (an org owner); else 403 ``refusal``."""
        if not self.principal.is_owner:
            raise ApiError(403, refusal)
        return self.principal

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

    def suffixed(self, suffix: str) -> tuple[str, dict[str, Any]]:
        """:meth:`where` and :attr:`params` with every placeholder renamed ``<name>_<suffix>``, so several scoped
        conditions can sit in one query apart (the log streams' shared read)."""
        where = _PARAM.sub(lambda m: "{" + f"{m.group(1)}_{suffix}:", self.where())
        return where, {f"{k}_{suffix}": v for k, v in self._params.items()}
