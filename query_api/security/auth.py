"""Who is calling: JWT verification (API.md) into a :class:`~auditlogkit.query_api.security.principal.Principal`.

The FastAPI dependencies that run it per request (the principal, the permissions, the rate limits) are in
:mod:`auditlogkit.query_api.deps`.

Contract:
- a token is accepted when its signature verifies with the configured key: HS256 with ``jwt_secret``, RS256 with
  ``jwt_public_key_file`` (PEM) or a key of ``jwt_jwks_file`` / ``jwt_jwks_url`` (chosen by ``kid``; the URL's keys
  are cached and refreshed as :mod:`auditlogkit.query_api.security.jwks` says); the algorithm comes from the key, never from the token
  alone (no alg confusion, no ``none``);
- ``exp`` is required and checked with ``jwt_leeway_seconds`` of clock skew; ``exp``, ``nbf`` and ``iat`` must be
  JSON numbers when present (not strings, not booleans); ``aud`` / ``iss`` are required and must match when
  ``jwt_audience`` / ``jwt_issuer`` are set (ignored otherwise);
- ``sub``, ``org_id`` and ``role`` (``org_owner`` | ``workspace_admin``) are required non-empty strings; ``email``
  is a non-empty string when present (absent: ``""``); ``workspaces`` and ``permissions`` are string lists (absent
  or null: empty; blank workspace ids are dropped);
- a service token (``role: "service"``, :class:`~auditlogkit.query_api.security.principal.ServicePrincipal`) has ``sub``,
  ``permissions`` and ``write_orgs`` (the org ids it may write for, ``"*"`` for any; absent: none) and no
  ``org_id``; it may only write (``audit:write``, rate-limited per ``sub`` by ``api_ingest_rate_*``): on a read endpoint it
  gets 403, and a read token on the write endpoint 403 too;
- every read is recorded as an audit event of the caller, so ``sub``, ``email`` and ``org_id`` must also be valid
  there (``auditlogkit.schemas.event``: length limits, a real e-mail address); a token whose claims could not be recorded is
  refused, naming the claim;
- no token, a malformed/expired/wrongly signed token or broken claims: 401 with ``WWW-Authenticate: Bearer``;
  a valid token without the needed permission: 403. Tokens are never logged.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jwt

from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.security.audit_event import unrecordable_claim
from auditlogkit.query_api.security.jwks import JwksCache, pick
from auditlogkit.query_api.security.principal import (
    EXPORT,
    READ,
    ROLES,
    SERVICE_ROLE,
    WRITE,
    Principal,
    ServicePrincipal,
)
from auditlogkit.server.settings import Settings

_BEARER = {"WWW-Authenticate": "Bearer"}
TIME_CLAIMS = ("exp", "nbf", "iat")


def mint_token(secret: str, *, sub: str, role: str, email: str = "", org_id: str | None = None,
               workspaces: list[str] | None = None, permissions: list[str] | tuple[str, ...] | None = None,
               write_orgs: list[str] | tuple[str, ...] | None = None, ttl_seconds: int = 8 * 3600,
               audience: str | None = None, issuer: str | None = None) -> str:
    """An HS256 token with the claims of API.md (for ``auditlog up --demo``, ``auditlog token`` and tests).

    A read token (``org_owner`` / ``workspace_admin``) gets ``permissions`` (default ``audit:read``,
    ``audit:export``); a ``service`` token gets ``write_orgs`` and ``permissions`` (default ``audit:write``);
    ``aud`` / ``iss`` when ``audience`` / ``issuer`` are given."""
    now = int(time.time())
    service = role == SERVICE_ROLE
    if permissions is None:
        permissions = (WRITE,) if service else (READ, EXPORT)
    claims: dict[str, Any] = {"sub": sub, "role": role, "permissions": list(permissions), "iat": now,
                              "exp": now + ttl_seconds}
    if email:
        claims["email"] = email
    if org_id is not None:
        claims["org_id"] = org_id
    if not service:
        claims["workspaces"] = list(workspaces or [])
    if write_orgs is not None or service:
        claims["write_orgs"] = list(write_orgs or [])
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")


class _ClaimTypeError(jwt.InvalidTokenError):
    """A registered claim of the wrong JSON type (the message names it)."""


class _StrictJWT(jwt.PyJWT):
    """PyJWT that refuses non-numeric time claims (PyJWT itself accepts ``"9999999999"`` and ``true``).

    The check runs on the payload of a token whose signature has already verified, before the claims are validated.
    """

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        payload = super()._decode_payload(decoded)
        for name in TIME_CLAIMS:
            if name in payload and not _is_number(payload[name]):
                raise _ClaimTypeError(f"claim {name!r} must be a number")
        return payload


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class TokenVerifier:
    """Verifies bearer tokens with the keys named in the settings."""

    def __init__(self, settings: Settings) -> None:
        self.leeway = settings.jwt_leeway_seconds
        self.secret = settings.jwt_secret or None
        self.audience = settings.jwt_audience or None
        self.issuer = settings.jwt_issuer or None
        self.public_key: Any = None
        self.jwks: dict[str | None, Any] = {}
        self.remote_jwks = JwksCache(settings.jwt_jwks_url, min_interval=settings.jwt_jwks_refresh_seconds,
                                     max_age=settings.jwt_jwks_max_age_seconds) if settings.jwt_jwks_url else None
        self._jwt = _StrictJWT()
        self._require = ["exp", "sub", "role"] + (["aud"] if self.audience else []) + (
            ["iss"] if self.issuer else [])
        if settings.jwt_public_key_file:
            self.public_key = _load_pem(Path(settings.jwt_public_key_file))
        if settings.jwt_jwks_file:
            doc = json.loads(Path(settings.jwt_jwks_file).read_text(encoding="utf-8"))
            for k in jwt.PyJWKSet.from_dict(doc).keys:
                self.jwks[k.key_id] = k.key

    @property
    def configured(self) -> bool:
        return bool(self.secret or self.public_key is not None or self.jwks or self.remote_jwks is not None)

    def _key_for(self, token: str) -> tuple[Any, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthorized(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if alg == "HS256" and self.secret:
            return self.secret, "HS256"
        if alg == "RS256":
            kid = header.get("kid")
            if self.jwks and (key := pick(self.jwks, kid)) is not None:
                return key, "RS256"
            if self.remote_jwks is not None and (key := self.remote_jwks.key(kid)) is not None:
                return key, "RS256"
            if self.public_key is not None:
                return self.public_key, "RS256"
            if self.jwks or self.remote_jwks is not None:
                raise unauthorized("no key of this server matches the token's 'kid'")
        raise unauthorized(f"token algorithm {alg!r} is not accepted by this server")

    def verify(self, token: str) -> Principal:
        """The reader of a valid token (401 / 403 per the module contract)."""
        return principal_from_claims(self.claims(token))

    def verify_service(self, token: str) -> ServicePrincipal:
        """The service of a valid service token (401 / 403 per the module contract)."""
        return service_principal_from_claims(self.claims(token))

    def claims(self, token: str) -> dict[str, Any]:
        """The claims of a token whose signature, time claims and ``aud``/``iss`` verify (else 401)."""
        if not self.configured:
            raise unauthorized("this server has no token key configured (AUDITLOG_JWT_SECRET / _PUBLIC_KEY_FILE / "
                                "_JWKS_FILE / _JWKS_URL)")
        key, alg = self._key_for(token)
        try:
            claims = self._jwt.decode(token, key, algorithms=[alg], leeway=self.leeway, audience=self.audience,
                                      issuer=self.issuer,
                                      options={"require": self._require, "verify_aud": self.audience is not None})
        except jwt.ExpiredSignatureError:
            raise unauthorized("token expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"invalid token: claim {exc.claim!r} is missing") from None
        except jwt.InvalidAudienceError:
            raise unauthorized("invalid token: claim 'aud' does not name this API's audience") from None
        except jwt.InvalidIssuerError:
            raise unauthorized("invalid token: claim 'iss' is not the accepted issuer") from None
        except jwt.PyJWTError as exc:
            raise unauthorized(f"invalid token: {exc}") from None
        return dict(claims)


def _text_claim(claims: dict[str, Any], name: str, required: bool = True) -> str:
    v = claims.get(name)
    if isinstance(v, str) and v:
        return v
    if not required and v is None:
        return ""
    raise unauthorized(f"invalid token: claim {name!r} must be a non-empty string")


def _str_list_claim(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    v = claims.get(name, [])
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise unauthorized(f"invalid token: claim {name!r} must be a list of strings")
    return tuple(v)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """The :class:`Principal` of verified ``claims`` (module contract); 401 for a missing or ill-typed claim, 403 for
    a service token."""
    def text(name: str, required: bool = True) -> str:
        return _text_claim(claims, name, required)

    def str_list(name: str) -> tuple[str, ...]:
        return _str_list_claim(claims, name)

    role = text("role")
    if role == SERVICE_ROLE:
        raise ApiError(403, "a service token may write events, not read them (it is for POST /v1/ingest only)")
    if role not in ROLES:
        raise unauthorized(f"invalid token: role {role!r} is not one of {', '.join(ROLES)}")
    principal = Principal(sub=text("sub"), email=text("email", required=False), org_id=text("org_id"), role=role,
                          workspaces=tuple(w for w in str_list("workspaces") if w.strip()),
                          permissions=frozenset(str_list("permissions")),
                          expires_at=float(claims["exp"]) if "exp" in claims else None)  # a number: verified
    problem = unrecordable_claim(principal)
    if problem is not None:
        claim, reason = problem
        raise unauthorized(f"invalid token: claim {claim!r} cannot be recorded in an audit event: {reason}")
    return principal


def service_principal_from_claims(claims: dict[str, Any]) -> ServicePrincipal:
    """The :class:`ServicePrincipal` of verified ``claims``: 401 for a missing or ill-typed claim, 403 for a read
    token (``audit:read`` grants no write)."""
    role = _text_claim(claims, "role")
    if role in ROLES:
        raise ApiError(403, f"a read token (role {role!r}) may read events, not write them: POST /v1/ingest needs a "
                            f"service token (role {SERVICE_ROLE!r} with {WRITE!r})")
    if role != SERVICE_ROLE:
        raise unauthorized(f"invalid token: role {role!r} is not one of {', '.join((*ROLES, SERVICE_ROLE))}")
    return ServicePrincipal(sub=_text_claim(claims, "sub"),
                            write_orgs=frozenset(o for o in _str_list_claim(claims, "write_orgs") if o.strip()),
                            permissions=frozenset(_str_list_claim(claims, "permissions")))


def _load_pem(path: Path) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(path.read_bytes())


def unauthorized(message: str) -> ApiError:
    """401 with ``WWW-Authenticate: Bearer``."""
    return ApiError(401, message, headers=_BEARER)
