"""What every destination is: its fields, and ``async def send(batch, ctx) -> Outcome``.

Contract:
- a destination module names its :data:`TYPE` and its :data:`FIELDS` (:class:`Field`: required or not, secret or
  not, a URL or not); :mod:`auditlogkit.query_api.streams.config` validates a configuration against them (URLs with
  :func:`auditlogkit.query_api.streams.ssrf.check_url`) and :mod:`auditlogkit.query_api.streams.store` keeps the secret ones sealed;
- ``send(batch, ctx)`` delivers one batch (events as the list returns them, in order) and says how it went as an
  :class:`Outcome`; it never raises for a destination's failure. It gets the same :attr:`Context.batch_id` on
  every retry of a batch, and :attr:`Context.state` keeps what it wants to remember between those retries;
- a reply's text in :attr:`Outcome.message` passes :meth:`Context.scrub` (no secret, no URL credentials).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from auditlogkit.query_api.streams.keys import mask
from auditlogkit.query_api.streams.ssrf import AllowList, Resolver, system_resolver
from auditlogkit.server.store import redact_text

MESSAGE_CHARS = 300


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a destination's configuration."""

    name: str
    required: bool = True
    secret: bool = False
    url: bool = False
    max_chars: int = 2048
    pattern: str | None = None
    """A regular expression the whole value must match."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one send went. ``retryable``: a 408/429/5xx, a timeout or a refused connection (retried with backoff);
    else a refusal that needs the owner (other 4xx, a refused address), retried at the longest backoff."""

    delivered: bool
    retry_after: float | None = None
    http_status: int | None = None
    message: str = ""
    retryable: bool = True


def delivered(http_status: int | None = None, message: str = "delivered") -> Outcome:
    return Outcome(True, http_status=http_status, message=message)


def refused(message: str, http_status: int | None = None) -> Outcome:
    """A failure only the stream's owner can fix."""
    return Outcome(False, http_status=http_status, message=message[:MESSAGE_CHARS], retryable=False)


def failed(message: str, http_status: int | None = None, retry_after: float | None = None) -> Outcome:
    """A failure that may pass by itself."""
    return Outcome(False, retry_after=retry_after, http_status=http_status, message=message[:MESSAGE_CHARS])


@dataclass
class Context:
    """Everything ``send`` may use besides the batch."""

    stream_id: str
    org_id: str
    batch_id: str
    fields: Mapping[str, str]
    secrets: Mapping[str, str] = field(repr=False)
    timeout: float = 10.0
    allow: AllowList = field(default_factory=AllowList)
    resolver: Resolver = system_resolver
    first: tuple[int, int] = (0, 0)
    """(partition, offset) of the batch's first event."""
    last: tuple[int, int] = (0, 0)
    """(partition, offset) of the batch's last event."""
    received_at: datetime | None = None
    """When the batch's first event was stored."""
    state: dict[str, Any] = field(default_factory=dict)
    test: bool = False
    """A test send of one synthetic event (``POST /v1/streams/{id}/test``), not a batch of the log."""
    clients: Any = None
    """The stream's HTTP clients (:class:`auditlogkit.query_api.streams.destinations.http.Clients`)."""

    def scrub(self, text: str) -> str:
        """``text`` without any of this stream's secrets (masked) or URL credentials, shortened."""
        out = text
        for value in self.secrets.values():
            if len(value) >= 4:
                out = out.replace(value, mask(value))
        for value in self.fields.values():
            if value.startswith(("http://", "https://")):
                out = redact_text(out, value)
        return out[:MESSAGE_CHARS]


Send = Callable[[list[dict[str, Any]], Context], Awaitable[Outcome]]


class Destination(Protocol):
    """A destination module (see the module contract)."""

    TYPE: str
    FIELDS: tuple[Field, ...]

    async def send(self, batch: list[dict[str, Any]], ctx: Context) -> Outcome: ...
