"""How many exports, live tails or ingest requests run at once: per caller (``org_id`` + ``sub``) and in total.

Contract of :class:`Slots`: :meth:`take` returns a :class:`Slot` or raises ``429`` (code ``too_many_<noun>``)
with ``Retry-After`` at once (never queues); :attr:`Slot.rank` is how many the caller held with it when it was
taken (1: its only one); :meth:`Slot.release` is idempotent and frees the place for the next.
"""

from __future__ import annotations

import threading
from collections import Counter

from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.security.principal import Caller

RETRY_AFTER_S = 5


class Slot:
    def __init__(self, owner: Slots, key: tuple[str, str], rank: int = 1) -> None:
        self._owner = owner
        self._key = key
        self.rank = rank
        self._released = False

    def release(self) -> None:
        with self._owner._lock:
            if self._released:
                return
            self._released = True
            self._owner._running[self._key] -= 1
            if self._owner._running[self._key] <= 0:
                del self._owner._running[self._key]


class Slots:
    def __init__(self, per_caller: int, total: int, noun: str = "exports") -> None:
        self.per_caller = per_caller
        self.total = total
        self.noun = noun
        self._running: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    @property
    def code(self) -> str:
        return "too_many_" + self.noun.replace(" ", "_")

    @property
    def running(self) -> int:
        with self._lock:
            return sum(self._running.values())

    def take(self, caller: Caller) -> Slot:
        key = (caller.org_id, caller.sub)
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        with self._lock:
            if self._running[key] >= self.per_caller:
                raise ApiError(429, f"you already run {self._running[key]} {self.noun} (limit {self.per_caller}); "
                                    "wait for one to finish", code=self.code, headers=headers)
            if sum(self._running.values()) >= self.total:
                raise ApiError(429, f"the server runs its limit of {self.total} {self.noun}; retry shortly",
                               code=self.code, headers=headers)
            self._running[key] += 1
            return Slot(self, key, self._running[key])
