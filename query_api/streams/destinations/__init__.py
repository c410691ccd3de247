"""The destination types of log streams: one module each (``webhook``, ``splunk_hec``, ``datadog``, ``s3``).

Contract: every module of this package that names a ``TYPE`` is a destination (:class:`~.base.Destination`:
``TYPE``, ``FIELDS``, ``async def send(batch, ctx) -> Outcome``) and :func:`destinations` finds it, so a new
destination is one module (and its test); ``base`` and ``http`` are what they share.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any, cast

from auditlogkit.query_api.streams.destinations.base import Destination


@cache
def destinations() -> dict[str, Destination]:
    """Every destination module by its ``TYPE``, in name order."""
    out: dict[str, Destination] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        mod: Any = importlib.import_module(f"{__name__}.{info.name}")
        if isinstance(getattr(mod, "TYPE", None), str) and callable(getattr(mod, "send", None)):
            out[mod.TYPE] = cast(Destination, mod)
    return out


def destination(kind: str) -> Destination:
    """The destination module of type ``kind``; KeyError for an unknown type."""
    return destinations()[kind]
