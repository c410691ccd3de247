"""The streams key and the encryption of destinations' secrets with it.

Contract:
- the key is ``AUDITLOG_STREAMS_KEY``: 32 random bytes, base64 (standard or URL-safe, padding optional); it is
  never kept in the store. :func:`weak_streams_key` says why a text must not be used (not 32 bytes once decoded,
  or too few distinct bytes to be random); :func:`streams_key` returns the configured key or raises
  :class:`StreamsKeyError` with a message fit for an operator;
- :func:`ensure_streams_key` is ``auditlog up``'s: the configured key, else one generated once into the (private)
  data directory (``<data_dir>/streams-key``, 0600), so a second ``up`` on that directory reads its secrets;
- :class:`SecretBox` seals a destination's secrets (a JSON object of strings) with AES-256-GCM, a fresh 96-bit
  nonce per seal and the stream's id and org as associated data (a blob copied to another stream does not open);
  the text is ``v1.<key id>.<base64 nonce+ciphertext>``, the key id being 8 hex digits of SHA-256 of the key (to
  tell a wrong key from a damaged blob);
- :func:`mask` is how a secret is shown: ``"••••"`` and its last 4 characters (only ``"••••"`` when it is shorter
  than 12). Secrets are never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
KEY_FILE = "streams-key"
MASK = "••••"
_VERSION = "v1"


class StreamsKeyError(ValueError):
    """The streams key is missing, weak or not the one that sealed a blob."""


def weak_streams_key(text: str | None) -> str | None:
    """Why ``text`` is not a usable streams key (None when it is)."""
    if not text:
        return "it is not set"
    try:
        raw = _decode(text)
    except ValueError:
        return "it is not base64"
    if len(raw) != KEY_BYTES:
        return f"it is {len(raw)} bytes once decoded, not {KEY_BYTES}"
    if len(set(raw)) < 16:
        return "its bytes are not random (too few distinct values)"
    return None


def _decode(text: str) -> bytes:
    t = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(t + "=" * (-len(t) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None


def new_key_text() -> str:
    """A new key: 32 random bytes, base64."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def streams_key(configured: str | None) -> bytes:
    """The configured key's bytes; :class:`StreamsKeyError` when it is missing or weak."""
    why = weak_streams_key(configured)
    if why:
        raise StreamsKeyError(
            f"AUDITLOG_STREAMS_KEY is refused: {why}. It encrypts the destinations' secrets and must be the same "
            "for the API and every deliverer; generate one with: python -c 'import base64, secrets; "
            "print(base64.b64encode(secrets.token_bytes(32)).decode())'")
    assert configured is not None
    return _decode(configured)


def ensure_streams_key(data_dir: Path, configured: str | None = None) -> bytes:
    """The configured key, else the one kept in ``<data_dir>/streams-key``, generated (0600) if missing."""
    if configured:
        return streams_key(configured)
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_key_text())
        try:
            os.link(tmp, path)  # atomic: the first process of this data directory keeps its key
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return streams_key(path.read_text().strip())


def mask(secret: str) -> str:
    """``"••••"`` + the last 4 characters (only ``"••••"`` for a secret shorter than 12)."""
    return MASK + secret[-4:] if len(secret) >= 12 else MASK


class SecretBox:
    """AES-256-GCM sealing of one stream's secrets (module contract)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise StreamsKeyError(f"the streams key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:8]

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id})"

    @staticmethod
    def _aad(stream_id: str, org_id: str) -> bytes:
        return f"auditlog-stream\x00{stream_id}\x00{org_id}".encode()

    def seal(self, values: dict[str, str], stream_id: str, org_id: str) -> str:
        """The sealed text of ``values`` for that stream."""
        nonce = secrets.token_bytes(12)
        plain = json.dumps(values, sort_keys=True, separators=(",", ":")).encode()
        blob = nonce + self._aead.encrypt(nonce, plain, self._aad(stream_id, org_id))
        return f"{_VERSION}.{self.key_id}.{base64.b64encode(blob).decode('ascii')}"

    def open(self, text: str, stream_id: str, org_id: str) -> dict[str, str]:
        """The secrets :meth:`seal` sealed for that stream; :class:`StreamsKeyError` otherwise."""
        if not text:
            return {}
        version, key_id, body = [*text.split(".", 2), "", ""][:3]
        if version != _VERSION:
            raise StreamsKeyError("not a sealed secrets blob")
        if key_id != self.key_id:
            raise StreamsKeyError(f"the secrets were sealed with another streams key (id {key_id}, this one "
                                  f"{self.key_id})")
        try:
            blob = base64.b64decode(body, validate=True)
            plain = self._aead.decrypt(blob[:12], blob[12:], self._aad(stream_id, org_id))
        except (binascii.Error, ValueError, InvalidTag):
            raise StreamsKeyError("the sealed secrets do not open (damaged, or another stream's)") from None
        values = json.loads(plain)
        return {str(k): str(v) for k, v in values.items()}
