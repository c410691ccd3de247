"""Store reads of API requests: on the API's own threads, with limits, cancelled when the caller leaves.

Contract of :class:`QueryRunner`:
- :meth:`run` calls ``fn(*args)`` on one of ``api_query_threads`` dedicated threads (never the threads that serve
  static files or the event loop); every query the call makes on ``store.client()`` carries
  ``max_execution_time`` / ``max_memory_usage`` from the settings and a ``log_comment`` tag unique to the call;
- when the HTTP client disconnects before the result is ready, the call's queries are killed by that tag
  (``KILL QUERY``, which works on a server and on embedded chDB) and :class:`ClientGone` is raised;
- ClickHouse's time and memory limits surface as 504 ``query_timeout`` / 503 ``query_too_large`` and an
  unreachable store as 503 ``store_unavailable`` (:func:`store_error`), all with the JSON error body;
- fair share: one caller (``org_id`` + ``sub``: ``caller``, else the request's authenticated principal) has at most
  ``api_queries_per_caller`` calls running or waiting for a thread; one more is refused at once with 429
  ``too_many_queries`` and ``Retry-After`` (:mod:`auditlogkit.query_api.security.slots`). A call's place is freed when its thread is
  done, not when its client leaves. A caller's n-th call at once runs at ClickHouse ``priority`` n (1 is the
  highest): while other callers' first queries run, its extra ones wait (:func:`priority_of`). Calls without a
  caller (the live tail's shared reader, ``/readyz``) are not counted and run at priority 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from starlette.requests import Request

from auditlogkit.query_api.core.errors import ApiError, ClientGone
from auditlogkit.query_api.security.principal import Caller, Principal
from auditlogkit.query_api.security.slots import Slots
from auditlogkit.server.logs import get_logger
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store

log = get_logger("auditlogkit.query_api.core.query_runner")
T = TypeVar("T")
TIMEOUT_CODES = {159, 160}  # TIMEOUT_EXCEEDED, TOO_SLOW
MEMORY_CODES = {241}  # MEMORY_LIMIT_EXCEEDED
REFUSED_CODES = {164, 497}  # READONLY, ACCESS_DENIED: the API's ClickHouse user may not do this


def limits_of(settings: Settings, timeout_s: float | None = None) -> dict[str, str]:
    """The ClickHouse settings every API query carries."""
    return {"max_execution_time": f"{timeout_s or settings.api_query_timeout_seconds:g}",
            "max_memory_usage": str(settings.api_query_max_memory)}


def kill_tagged(store: Store, tag: str) -> None:
    """Cancel every running query whose ``log_comment`` is ``tag`` (from a thread of the caller's)."""
    try:
        store.client().command("KILL QUERY WHERE Settings['log_comment'] = {tag:String} ASYNC",
                               parameters={"tag": tag})
    except Exception as exc:  # the query may have ended meanwhile; a failed kill is bounded by max_execution_time
        log.warning("query.kill_failed", tag=tag, error=repr(exc))


def store_error(exc: Exception, timeout_s: float) -> ApiError | None:
    """The API error for a store failure, or None when it is not one we answer ourselves."""
    if isinstance(exc, DatabaseError) and getattr(exc, "code", None) in TIMEOUT_CODES:
        return ApiError(504, f"the query ran longer than its limit of {timeout_s:g} s; narrow the period or add "
                             "filters", code="query_timeout")
    if isinstance(exc, DatabaseError) and getattr(exc, "code", None) in MEMORY_CODES:
        return ApiError(503, "the query needed more memory than its limit; narrow the period or add filters",
                        code="query_too_large")
    if isinstance(exc, DatabaseError) and getattr(exc, "code", None) in REFUSED_CODES:
        log.error("query.not_allowed", error=str(exc).splitlines()[0][:300])
        return ApiError(503, "the store refused this for the API's ClickHouse user (read-only or not granted); "
                             "the operator's log says more", code="store_refused")
    if isinstance(exc, OperationalError):
        return ApiError(503, "the store is unreachable; try again shortly", code="store_unavailable",
                        headers={"Retry-After": "5"})
    return None


def priority_of(rank: int) -> dict[str, str]:
    """The ClickHouse ``priority`` of a caller's ``rank``-th call at once (smaller runs first; the server pauses a
    query while one of a smaller priority runs) and the OS nice value of its query threads (``os_thread_priority``:
    on embedded chDB they share the CPU with the event loop, which must win it to answer anyone; a caller's extra
    calls yield to everyone's first and run on one thread each)."""
    if rank <= 1:
        return {"priority": "1", "os_thread_priority": "10", "max_threads": "0"}  # 0: ClickHouse's default
    return {"priority": str(rank), "os_thread_priority": "19", "max_threads": "1"}


class QueryRunner:
    """Runs request reads on a dedicated pool (module contract)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=settings.api_query_threads, thread_name_prefix="query")
        self.callers = Slots(settings.api_queries_per_caller, total=sys.maxsize, noun="queries")  # per caller only
        self._local = threading.local()

    def _call(self, tag: str, limits: dict[str, str], fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        client = self.store.client()
        applied: dict[str, str] = self._local.__dict__.setdefault("applied", {})
        for k, v in {**limits, "log_comment": tag}.items():
            if applied.get(k) != v:  # on chDB each change is a SET statement: only what differs
                client.set_client_setting(k, v)
                applied[k] = v
        return fn(*args)

    async def run(self, request: Request | None, fn: Callable[..., T], *args: Any, timeout_s: float | None = None,
                  caller: Caller | None = None) -> T:
        """``fn(*args)`` on a query thread; cancelled when ``request``'s client disconnects; 429 when the caller
        already has its share of calls (module contract)."""
        tag = f"api-{uuid.uuid4().hex}"
        loop = asyncio.get_running_loop()
        limits = limits_of(self.settings, timeout_s)
        if caller is None and request is not None and isinstance(getattr(request.state, "principal", None), Principal):
            caller = request.state.principal
        slot = self.callers.take(caller) if caller is not None else None
        limits = {**limits, **priority_of(slot.rank if slot is not None else 1)}
        try:
            work = asyncio.ensure_future(loop.run_in_executor(self.pool, self._call, tag, limits, fn, args))
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        if slot is not None:
            work.add_done_callback(lambda _: slot.release())
        gone = asyncio.ensure_future(_disconnected(request)) if request is not None else None
        try:
            waiting: set[asyncio.Future[Any]] = {work} if gone is None else {work, gone}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                log.info("query.cancelled", tag=tag, path=request.url.path if request else None)
                await loop.run_in_executor(None, kill_tagged, self.store, tag)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(work), 5)
                raise ClientGone()
            try:
                return work.result()
            except Exception as exc:
                err = store_error(exc, float(limits["max_execution_time"]))
                if err is None:
                    raise
                log.warning("query.refused", code=err.code, error=str(exc).splitlines()[0][:300])
                raise err from None
        finally:
            if gone is not None:
                gone.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


async def _disconnected(request: Request) -> None:
    """Returns once the client has disconnected (the request body, if any, was already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
