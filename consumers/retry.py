"""Retry with capped exponential backoff and jitter: the one helper for every store and broker call.

Contract: :meth:`Retry.run` calls ``fn(attempt)`` until it returns; any ``Exception`` is logged as
``<step>.retry`` and retried after :func:`backoff_delay`; ``CancelledError`` propagates. With ``stoppable`` it
raises :class:`Stopping` once ``should_stop()`` is true. ``failing`` tells whether the last attempt of a step
failed (readiness).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from auditlogkit.consumers import metrics as m
from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.consumers.retry")
T = TypeVar("T")


def backoff_delay(attempt: int, base: float = 0.1, cap: float = 30.0) -> float:
    """Capped exponential backoff with jitter: uniform in [d/2, d], d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2 ** min(attempt, 30)))
    return d / 2 + random.uniform(0, d / 2)


class Stopping(Exception):
    """A stop was requested while a stoppable call was being retried."""


class Retry:
    def __init__(self, worker: str, base_s: float, cap_s: float, should_stop: Callable[[], bool],
                 counts: Counter[str]) -> None:
        self.worker = worker
        self.base_s = base_s
        self.cap_s = cap_s
        self.should_stop = should_stop
        self.counts = counts  # its own: "<step>_retries"
        self.failing: dict[str, bool] = {"store": False, "dlq": False}

    async def run(self, step: str, fn: Callable[[int], Awaitable[T]], stoppable: bool = False,
                  retry_on: tuple[type[Exception], ...] = (Exception,)) -> T:
        """``fn(attempt)`` until it returns, with backoff after each failure of ``retry_on`` (any other raises);
        ``stoppable``: :class:`Stopping` once a stop is requested."""
        attempt = 0
        while True:
            if stoppable and self.should_stop():
                raise Stopping(step)
            try:
                out = await fn(attempt)
            except asyncio.CancelledError:
                raise
            except retry_on as exc:  # a store/broker failure is retried, never committed
                self.failing[step] = True
                delay = backoff_delay(attempt, self.base_s, self.cap_s)
                self.counts[f"{step}_retries"] += 1
                m.RETRIES.labels(step).inc()
                log.warning(f"{step}.retry", worker=self.worker, attempt=attempt + 1, delay_s=round(delay, 3),
                            error=f"{type(exc).__name__}: {str(exc)[:300]}")
                await asyncio.sleep(delay)
                attempt += 1
                continue
            if attempt:
                log.info(f"{step}.recovered", worker=self.worker, attempts=attempt + 1)
            self.failing[step] = False
            return out
