"""Per-caller request rate limit of ``/v1`` (a token bucket per ``org_id`` + ``sub``).

Contract of :class:`RateLimiter`: each caller's bucket holds up to ``burst`` tokens and refills at ``rate`` per
second; :meth:`check` takes one token or raises ``429 rate_limited`` with ``Retry-After`` (whole seconds until a
token is back). ``rate`` 0 turns the limit off. At most ``max_callers`` buckets are kept (least recently used
dropped: a dropped caller starts again with a full bucket).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.security.principal import Caller


class RateLimiter:
    def __init__(self, rate: float, burst: int, *, max_callers: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_callers = max_callers
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def check(self, caller: Caller, now: float | None = None) -> None:
        """Take a token for ``caller`` or raise 429 (module contract)."""
        if self.rate <= 0:
            return
        t = time.monotonic() if now is None else now
        key = (caller.org_id, caller.sub)
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, t))
            tokens = min(self.burst, tokens + (t - at) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, t)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise ApiError(429, f"too many requests from this caller (limit {self.rate:g}/s, burst "
                                    f"{self.burst:g}); retry in {wait} s", code="rate_limited",
                               headers={"Retry-After": str(wait)})
            self._buckets[key] = (tokens - 1.0, t)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
