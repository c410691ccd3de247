"""Who a verified caller is: a reader (:class:`Principal`) or a writing service (:class:`ServicePrincipal`).

Contract: both are built only by :mod:`auditlogkit.query_api.security.auth` from a verified token (tests and ``auditlog export
--org`` build a :class:`Principal` directly); the permissions are :data:`READ`, :data:`EXPORT`, :data:`WRITE` and :data:`STREAM`; a
reader's role is one of :data:`ROLES`, a service's is :data:`SERVICE_ROLE`. The request limits key a caller by
``(org_id, sub)`` (:class:`Caller`); a service's key is its :meth:`ServicePrincipal.as_caller`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

ROLES: tuple[str, ...] = ("org_owner", "workspace_admin")
SERVICE_ROLE = "service"
READ = "audit:read"
EXPORT = "audit:export"
WRITE = "audit:write"
STREAM = "audit:stream"  # an org owner may manage the org's log streams (STREAMS.md)
ANY_ORG = "*"


class Caller(Protocol):
    """What the per-caller limits key on (rate, slots, query fair share)."""

    @property
    def org_id(self) -> str: ...

    @property
    def sub(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller."""

    sub: str
    email: str
    org_id: str
    role: str
    workspaces: tuple[str, ...] = ()
    permissions: frozenset[str] = frozenset()
    expires_at: float | None = None  # the token's ``exp`` (epoch seconds): a live tail ends there

    @property
    def is_owner(self) -> bool:
        return self.role == "org_owner"

    def can(self, permission: str) -> bool:
        return permission in self.permissions


class ServiceCaller(NamedTuple):
    """The ingest limits' key of a service: its ``sub``."""

    org_id: str
    sub: str


@dataclass(frozen=True, slots=True)
class ServicePrincipal:
    """A verified service token: it may publish events for the orgs of ``write_orgs`` (``"*"``: any org)."""

    sub: str
    write_orgs: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def may_write(self, org_id: str) -> bool:
        return ANY_ORG in self.write_orgs or org_id in self.write_orgs

    def as_caller(self) -> ServiceCaller:
        """The key of this service in the ingest limits (rate, requests in progress): its ``sub``."""
        return ServiceCaller(SERVICE_ROLE, self.sub)
