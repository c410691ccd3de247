"""RS256 keys from the identity provider's JWKS URL (``AUDITLOG_JWT_JWKS_URL``), fetched, cached and refreshed.

Contract of :class:`JwksCache`:
- :meth:`JwksCache.key` is the public key of a ``kid`` (for a token without ``kid``: the only key, if there is
  exactly one), or None;
- the key set is fetched at first use, again once it is older than ``max_age`` seconds, and again when a token
  names a ``kid`` it does not hold (key rotation); two fetches are at least ``min_interval`` seconds apart whatever
  the tokens say, so a flood of made-up ``kid``s costs the identity provider one request per interval;
- a fetch is one GET without redirects, bounded by ``timeout`` seconds (per network step and in total) and
  :data:`MAX_BYTES`; a failed fetch (network, status, size, not a JWKS with an RSA signing key) keeps the keys held
  so far and is logged (``auth.jwks_fetch_failed``); the URL's scheme is checked by the settings (https, or http
  to a loopback host);
- thread-safe (tokens are verified on the threadpool): one fetch at a time; a token whose key is cached and fresh
  never waits for a fetch.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import jwt

from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.query_api.security.jwks")

MAX_BYTES = 1 << 20  # a JWKS is a few KB


class JwksError(Exception):
    """Why a fetched key set was not taken."""


def rsa_signing_keys(doc: Any) -> dict[str | None, Any]:
    """The RSA signature keys of a JWKS document by ``kid`` (keys for encryption or of other types left out);
    JwksError if it is no JWKS or has none."""
    try:
        keys = jwt.PyJWKSet.from_dict(doc).keys
    except (jwt.PyJWTError, TypeError, AttributeError, KeyError, ValueError) as exc:
        raise JwksError(f"not a JWKS: {exc}") from None
    usable = {k.key_id: k.key for k in keys if k.key_type == "RSA" and k.public_key_use in (None, "sig")}
    if not usable:
        raise JwksError("the JWKS has no RSA signing key")
    return usable


def pick(keys: dict[str | None, Any], kid: object) -> Any | None:
    """The key of ``kid`` in ``keys``; for no ``kid`` the only key; None otherwise (also for a non-text kid)."""
    if kid is None:
        return next(iter(keys.values())) if len(keys) == 1 else None
    return keys.get(kid) if isinstance(kid, str) else None


class JwksCache:
    def __init__(self, url: str, *, min_interval: float, max_age: float, timeout: float = 5.0) -> None:
        self.url = url
        self.min_interval = min_interval
        self.max_age = max_age
        self.timeout = timeout
        self._keys: dict[str | None, Any] = {}
        self._fetched_at: float | None = None  # monotonic time of the last successful fetch
        self._attempted_at: float | None = None  # of the last attempt, successful or not
        self._lock = threading.Lock()

    def _fresh(self) -> bool:
        return self._fetched_at is not None and time.monotonic() - self._fetched_at < self.max_age

    def key(self, kid: object) -> Any | None:
        """The key for a token's ``kid`` header (module contract)."""
        if self._fresh() and (found := pick(self._keys, kid)) is not None:
            return found
        with self._lock:
            if not self._fresh():
                self._refresh()
            found = pick(self._keys, kid)
            if found is None and isinstance(kid, str):
                self._refresh()  # rotation: the provider may have published it since (rate-limited)
                found = pick(self._keys, kid)
            return found

    def _refresh(self) -> None:
        """Fetch the key set unless the last attempt was less than ``min_interval`` ago (caller holds the lock)."""
        now = time.monotonic()
        if self._attempted_at is not None and now - self._attempted_at < self.min_interval:
            return
        self._attempted_at = now
        try:
            keys = rsa_signing_keys(json.loads(self._fetch()))
        except (httpx.HTTPError, JwksError, ValueError) as exc:
            log.warning("auth.jwks_fetch_failed", url=self.url, error=str(exc) or type(exc).__name__,
                        keys_kept=len(self._keys))
            return
        if set(keys) != set(self._keys):
            log.info("auth.jwks_keys", url=self.url, kids=sorted(str(k) for k in keys))
        self._keys, self._fetched_at = keys, time.monotonic()

    def _fetch(self) -> bytes:
        deadline = time.monotonic() + self.timeout
        body = bytearray()
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client, \
                client.stream("GET", self.url, headers={"Accept": "application/json"}) as r:
            if r.status_code != 200:
                raise JwksError(f"HTTP {r.status_code}")
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise JwksError(f"larger than {MAX_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise JwksError(f"not received within {self.timeout} s")
        return bytes(body)
