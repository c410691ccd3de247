"""Who published a Kafka message: the headers the API signs and the consumer believes, and the reserved category.

Contract:
- a :data:`Publisher` is ``(via, id)``: ``("http", <service token sub>)`` for ``POST /v1/ingest``,
  ``("api", "query-api")`` for the API's own self-audit, ``("kafka", None)`` for anything else on the topic
  (Kafka does not tell a consumer which principal produced a record);
- :func:`signed_headers` are the two headers the API adds to its messages: the publisher and a MAC (server
  secret, :class:`~auditlogkit.server.signing.Purpose` ``MESSAGE``) over the publisher and the exact value bytes;
- :func:`publisher_of` is the publisher a consumer records: the signed one when the MAC verifies for these
  value bytes, else :data:`KAFKA` (headers copied onto other bytes, edited or forged prove nothing). Only
  :data:`API` may publish the reserved category (``auditlogkit.schemas.catalog.RESERVED``, who read the audit log).
"""

from __future__ import annotations

from collections.abc import Iterable

from auditlogkit.server.signing import Purpose, ServerKeys

Publisher = tuple[str, str | None]
KAFKA: Publisher = ("kafka", None)
API: Publisher = ("api", "query-api")
PUBLISHER_HEADER = "auditlog-publisher"
MAC_HEADER = "auditlog-mac"
_TAG = b"auditlog-message-v1\x00"


def http(sub: str) -> Publisher:
    return ("http", sub)


def _encode(publisher: Publisher) -> bytes:
    via, pid = publisher
    return f"{via}:{pid or ''}".encode()


def _signed_bytes(publisher_bytes: bytes, value: bytes) -> bytes:
    return _TAG + len(publisher_bytes).to_bytes(4, "big") + publisher_bytes + value


def signed_headers(keys: ServerKeys, publisher: Publisher, value: bytes) -> list[tuple[str, bytes]]:
    """The headers that make the consumer record ``publisher`` for a message with exactly ``value``."""
    p = _encode(publisher)
    return [(PUBLISHER_HEADER, p), (MAC_HEADER, keys.mac(Purpose.MESSAGE, _signed_bytes(p, value)))]


def publisher_of(keys: ServerKeys, headers: Iterable[tuple[str, bytes]] | None, value: bytes | None) -> Publisher:
    """The verified publisher of a record (module contract); :data:`KAFKA` when nothing verifies."""
    if not headers or value is None:
        return KAFKA
    p = mac = None
    for k, v in headers:
        if k == PUBLISHER_HEADER:
            p = v
        elif k == MAC_HEADER:
            mac = v
    if p is None or mac is None or not keys.verify(Purpose.MESSAGE, _signed_bytes(p, value), mac):
        return KAFKA
    via, _, pid = p.decode("utf-8", "replace").partition(":")
    return (via, pid or None)
