"""The server secret and the MACs made with it: one secret, one derived key per purpose.

Contract:
- :func:`server_secret_for` is ``AUDITLOG_SERVER_SECRET``, else a secret generated once into the (private) data
  directory (``<data_dir>/server-secret``, 0600), so every process of one ``auditlog up`` or one data directory
  shares it; a deployment with several hosts sets the setting on the API and every consumer alike;
- :class:`ServerKeys` derives an independent key per :class:`Purpose` (HMAC-SHA256 of the secret and the
  purpose's name), so a list cursor cannot be replayed as a tail position or a message signature;
  :meth:`ServerKeys.mac` / :meth:`ServerKeys.verify` (constant time) are the only ways to use them;
- :func:`weak_secret` says why a secret must not be used (shorter than :data:`MIN_SECRET_BYTES`, or one of the
  example values shipped in this repository), or None; processes refuse to start with such a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from enum import StrEnum
from pathlib import Path

MIN_SECRET_BYTES = 32
SECRET_FILE = "server-secret"
#: the placeholder values of deploy/.env.example, deploy/k8s/secret.example.yaml and the docs: never real secrets
EXAMPLE_SECRETS = frozenset({
    "change-me", "changeme", "change-me-to-a-long-random-secret", "please-change-me-to-32-random-bytes-or-more",
    "replace-with-32-or-more-random-bytes", "secret", "dev-secret", "auditlog", "example",
    "change-me-to-32-or-more-random-bytes",  # deploy/.env.example (AUDITLOG_JWT_SECRET)
    "change-me-0123456789abcdef0123456789abcdef",  # deploy/k8s/secret.example.yaml (jwt-secret)
    "change-me-to-another-32-or-more-random-bytes",  # deploy/.env.example, secret.example.yaml (server secret)
})


class Purpose(StrEnum):
    """What a MAC authenticates (each has its own derived key)."""

    CURSOR = "cursor"  # list cursors of GET /v1/events
    TAIL_POSITION = "tail-position"  # live-tail positions (SSE id, Last-Event-ID)
    MESSAGE = "message"  # the API's own Kafka messages (self-audit, HTTP ingest): publisher + value


class ServerKeys:
    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        if not raw:
            raise ValueError("the server secret is empty")
        self._keys = {p: hmac.new(raw, b"auditlog/" + p.value.encode(), hashlib.sha256).digest() for p in Purpose}

    def mac(self, purpose: Purpose, data: bytes) -> bytes:
        """The 32-byte HMAC-SHA256 of ``data`` with ``purpose``'s key."""
        return hmac.new(self._keys[purpose], data, hashlib.sha256).digest()

    def verify(self, purpose: Purpose, data: bytes, mac: bytes) -> bool:
        """Whether ``mac`` (full, or a prefix of at least 16 bytes) is ``data``'s MAC for ``purpose``."""
        if len(mac) < 16:
            return False
        return hmac.compare_digest(self.mac(purpose, data)[: len(mac)], mac)


def weak_secret(value: str | None) -> str | None:
    """Why ``value`` must not be used as a secret (None when it may)."""
    if value is None:
        return None
    if value.strip().lower() in EXAMPLE_SECRETS:
        return "it is an example value shipped in the repository"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"it is shorter than {MIN_SECRET_BYTES} bytes"
    return None


def generated_secret(path: Path) -> str:
    """The secret kept in ``path``, generated (48 random bytes, URL-safe text, file 0600) if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)  # atomic: a process of the same data directory that was first keeps its secret
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text().strip()


def server_secret_for(configured: str | None, data_dir: Path) -> str:
    """The configured server secret, else the one generated into ``data_dir`` (module contract)."""
    return configured or generated_secret(data_dir / SECRET_FILE)
