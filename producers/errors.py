"""What a producer raises or hands to ``on_error``: an event that breaks the contract, or one it could not deliver."""

from __future__ import annotations

from auditlogkit.schemas.event import EventError


class InvalidEvent(EventError):
    """The event was not sent because it breaks the contract (``field`` and ``reason`` say which rule)."""


class DeliveryFailed(Exception):
    """The event could not be delivered (the API's status and message, or the network error)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
