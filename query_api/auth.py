"""Who is calling: JWT verification (API.md) into a :class:`Principal`, and the permission dependencies.

Contract:
- a token is accepted when its signature verifies with the configured key: HS256 with ``jwt_secret``, RS256 with
  ``jwt_public_key_file`` (PEM) or a key of ``jwt_jwks_file`` (chosen by ``kid``); the algorithm comes from the
  key, never from the token alone (no alg confusion, no ``none``);
- ``exp`` is required and checked with ``jwt_leeway_seconds`` of clock skew; ``sub``, ``org_id`` and ``role``
  (``org_owner`` | ``workspace_admin``) are required non-empty strings; ``email`` is a non-empty string when
  present (absent: ``""``); ``workspaces`` and ``permissions`` are string lists (absent or null: empty);
- no token, a malformed/expired/wrongly signed token or broken claims: 401 with ``WWW-Authenticate: Bearer``;
  a valid token without the needed permission: 403. Tokens are never logged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from auditlog.settings import Settings
from query_api.errors import ApiError

Role = Literal["org_owner", "workspace_admin"]
ROLES: tuple[str, ...] = ("org_owner", "workspace_admin")
READ = "audit:read"
EXPORT = "audit:export"
_BEARER = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller."""

    sub: str
    email: str
    org_id: str
    role: str
    workspaces: tuple[str, ...] = ()
    permissions: frozenset[str] = frozenset()

    @property
    def is_owner(self) -> bool:
        return self.role == "org_owner"

    def can(self, permission: str) -> bool:
        return permission in self.permissions


def mint_token(secret: str, *, sub: str, email: str, org_id: str, role: str, workspaces: list[str] | None = None,
               permissions: list[str] | tuple[str, ...] = (READ, EXPORT), ttl_seconds: int = 8 * 3600) -> str:
    """An HS256 token with the claims of API.md (for ``auditlog up --demo`` and tests)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "email": email, "org_id": org_id, "role": role,
                              "workspaces": list(workspaces or []), "permissions": list(permissions),
                              "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm="HS256")


class TokenVerifier:
    """Verifies bearer tokens with the keys named in the settings."""

    def __init__(self, settings: Settings) -> None:
        self.leeway = settings.jwt_leeway_seconds
        self.secret = settings.jwt_secret or None
        self.public_key: Any = None
        self.jwks: dict[str | None, Any] = {}
        if settings.jwt_public_key_file:
            self.public_key = _load_pem(Path(settings.jwt_public_key_file))
        if settings.jwt_jwks_file:
            doc = json.loads(Path(settings.jwt_jwks_file).read_text(encoding="utf-8"))
            for k in jwt.PyJWKSet.from_dict(doc).keys:
                self.jwks[k.key_id] = k.key

    @property
    def configured(self) -> bool:
        return bool(self.secret or self.public_key is not None or self.jwks)

    def _key_for(self, token: str) -> tuple[Any, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if alg == "HS256" and self.secret:
            return self.secret, "HS256"
        if alg == "RS256":
            kid = header.get("kid")
            if self.jwks:
                key = self.jwks.get(kid) if kid is not None else (
                    next(iter(self.jwks.values())) if len(self.jwks) == 1 else None)
                if key is not None:
                    return key, "RS256"
            if self.public_key is not None:
                return self.public_key, "RS256"
        raise _unauthorized(f"token algorithm {alg!r} is not accepted by this server")

    def verify(self, token: str) -> Principal:
        if not self.configured:
            raise _unauthorized("this server has no token key configured (AUDITLOG_JWT_SECRET / _PUBLIC_KEY_FILE / "
                                "_JWKS_FILE)")
        key, alg = self._key_for(token)
        try:
            claims = jwt.decode(token, key, algorithms=[alg], leeway=self.leeway,
                                options={"require": ["exp", "sub", "org_id", "role"], "verify_aud": False})
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token expired") from None
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"invalid token: {exc}") from None
        return principal_from_claims(claims)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """The :class:`Principal` of verified ``claims`` (module contract); 401 for a missing or ill-typed claim."""
    def text(name: str, required: bool = True) -> str:
        v = claims.get(name)
        if isinstance(v, str) and v:
            return v
        if not required and v is None:
            return ""
        raise _unauthorized(f"invalid token: claim {name!r} must be a non-empty string")

    def str_list(name: str) -> tuple[str, ...]:
        v = claims.get(name, [])
        if v is None:
            return ()
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise _unauthorized(f"invalid token: claim {name!r} must be a list of strings")
        return tuple(v)

    role = text("role")
    if role not in ROLES:
        raise _unauthorized(f"invalid token: role {role!r} is not one of {', '.join(ROLES)}")
    return Principal(sub=text("sub"), email=text("email", required=False), org_id=text("org_id"), role=role,
                     workspaces=str_list("workspaces"), permissions=frozenset(str_list("permissions")))


def _load_pem(path: Path) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(path.read_bytes())


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers=_BEARER)


_bearer = HTTPBearer(auto_error=False, description="JWT per API.md (HS256 or RS256)")


def current_principal(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The verified caller of this request (401 without a valid bearer token)."""
    if creds is None or not creds.credentials:
        raise _unauthorized("missing bearer token (Authorization: Bearer <JWT>)")
    verifier: TokenVerifier = request.app.state.verifier
    principal = verifier.verify(creds.credentials)
    request.state.principal = principal  # for the access log (sub and org only)
    return principal


def require(permission: str) -> Callable[[Principal], Principal]:
    """A dependency that lets the caller through only with ``permission`` (403 otherwise)."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.can(permission):
            raise ApiError(403, f"this token lacks the permission {permission!r}")
        return principal

    check.__name__ = f"require_{permission.replace(':', '_')}"
    return check


def _require_read_and_export(principal: Annotated[Principal, Depends(require(READ))]) -> Principal:
    if not principal.can(EXPORT):
        raise ApiError(403, f"this token lacks the permission {EXPORT!r}")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
ReadPrincipal = Annotated[Principal, Depends(require(READ))]
ExportPrincipal = Annotated[Principal, Depends(_require_read_and_export)]
