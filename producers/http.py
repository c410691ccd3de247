"""The HTTP transport: events to the audit log's ``POST /v1/ingest`` with a service token (module contract).

- Events are gathered for ``linger_ms`` (or until ``max_batch`` / 4 MiB) and sent as one NDJSON body; each
  event's future resolves with ``None`` when the API answered ``202`` and did not reject it (the API answers only
  after the broker acknowledged), or fails with :class:`~auditlogkit.producer.InvalidEvent` for an event it rejected.
- ``429`` and ``503`` (and a connection failure or timeout) are retried with the same body (``event_id`` keeps a
  retry from storing twice), waiting ``Retry-After`` or an exponential backoff, until ``delivery_timeout_s``; then
  every event of the batch fails with :class:`DeliveryFailed`. ``401``/``403``/``413``/``415``/``422`` fail the
  batch at once with the API's message (the token, the org or the body is wrong: a retry cannot help).
- The token travels only in the ``Authorization`` header; it is in no message, ``repr`` or log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import httpx

from auditlogkit.errors import DeliveryFailed, InvalidEvent

MAX_BODY = 4 * 1024 * 1024  # below the API's 5 MiB
RETRYABLE = {429, 502, 503, 504}


class HttpTransport:
    """Batches events to ``<url>/v1/ingest``; see the module contract."""

    def __init__(self, url: str, token: str, *, linger_ms: int = 50, max_batch: int = 1_000,
                 timeout_s: float = 10.0, delivery_timeout_s: float = 60.0,
                 client: httpx.AsyncClient | None = None) -> None:
        self.endpoint = url.rstrip("/") + "/v1/ingest"
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
        self.linger_s = linger_ms / 1000
        self.max_batch = max_batch
        self.delivery_timeout_s = delivery_timeout_s
        self._client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._queue: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()  # something is queued (or a flush asks)
        self._urgent = asyncio.Event()  # a full batch is queued, or a flush asks: no lingering
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._ok = False

    def __repr__(self) -> str:
        return f"HttpTransport({self.endpoint!r})"

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="auditlog-http-transport")

    async def stop(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.aclose()

    async def flush(self) -> None:
        """Returns once everything sent before has been answered (delivered or failed)."""
        while self._queue or not self._idle.is_set():
            self._wake.set()
            self._urgent.set()
            await self._idle.wait()
            await asyncio.sleep(0)

    async def send(self, value: bytes, key: bytes | None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        if headers:
            raise ValueError("the HTTP transport sends no message headers (signed messages go over Kafka)")
        if self._task is None:
            raise RuntimeError("the producer is not started (use `async with` or start())")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((value, fut))
        self._idle.clear()
        self._wake.set()
        if len(self._queue) >= self.max_batch:
            self._urgent.set()
        return fut

    def connected(self) -> bool:
        """True once the API answered the last request (no request made here)."""
        return self._ok

    async def reachable(self) -> None:
        """Returns once the API answers ``/healthz``; raises :class:`DeliveryFailed` otherwise."""
        try:
            r = await self._client.get(self.endpoint.removesuffix("/v1/ingest") + "/healthz")
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"the audit log API is unreachable: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise DeliveryFailed(f"the audit log API answered {r.status_code}", r.status_code)

    # ----- the sender -------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._queue) < self.max_batch and not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self.linger_s)
            self._urgent.clear()
            batch: list[tuple[bytes, asyncio.Future[Any]]] = []
            size = 0
            while self._queue and len(batch) < self.max_batch and (not batch or size + len(self._queue[0][0]) < MAX_BODY):
                item = self._queue.pop(0)
                batch.append(item)
                size += len(item[0]) + 1
            await self._deliver(batch)

    async def _deliver(self, batch: list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        body = b"\n".join(v for v, _ in batch)
        loop = asyncio.get_running_loop()
        deadline, attempt = loop.time() + self.delivery_timeout_s, 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                r = await self._client.post(self.endpoint, content=body, headers=self._headers)
            except httpx.HTTPError as exc:
                self._ok = False
                error = DeliveryFailed(f"the audit log API is unreachable: {type(exc).__name__}")
            else:
                self._ok = True
                rejected = _rejections(r) if r.status_code in (202, 422) else None
                if rejected is not None:
                    _settle(batch, rejected, accepted=r.status_code == 202)
                    return
                error = DeliveryFailed(f"the audit log API answered {r.status_code}: {_message(r)}", r.status_code)
                if r.status_code not in RETRYABLE:
                    _fail(batch, error)
                    return
                wait = _retry_after(r)
            if wait is None:
                wait = min(30.0, 0.2 * 2 ** attempt) * (0.5 + random.random() / 2)
            if loop.time() + wait > deadline:
                _fail(batch, error)
                return
            await asyncio.sleep(wait)


def _rejections(r: httpx.Response) -> dict[int, tuple[str, str]] | None:
    """index → (field, reason) of the events the API rejected; None when the body is not the ingest answer (a
    ``202`` with its ``rejected`` list, or a ``422`` naming at least one)."""
    try:
        doc = r.json()
        rejected = doc.get("rejected") if isinstance(doc, dict) else None
        if not isinstance(rejected, list) or (r.status_code != 202 and not rejected):
            return None
        return {int(x["index"]): (str(x["field"]), str(x["reason"])) for x in rejected}
    except (ValueError, KeyError, TypeError):
        return None


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json()["error"]["message"])[:500]
    except (ValueError, KeyError, TypeError):
        return r.reason_phrase


def _retry_after(r: httpx.Response) -> float | None:
    try:
        return max(0.0, min(300.0, float(r.headers.get("Retry-After", ""))))
    except ValueError:
        return None


def _settle(batch: list[tuple[bytes, asyncio.Future[Any]]], rejected: dict[int, tuple[str, str]], *,
            accepted: bool) -> None:
    """Each event's outcome: rejected (its reason), delivered (a ``202`` took it), or not delivered."""
    for i, (_, fut) in enumerate(batch):
        if fut.done():
            continue
        if i in rejected:
            fut.set_exception(InvalidEvent(*rejected[i]))
        elif accepted:
            fut.set_result(None)
        else:
            fut.set_exception(DeliveryFailed("the audit log API accepted none of the batch", 422))


def _fail(batch: list[tuple[bytes, asyncio.Future[Any]]], error: BaseException) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(error)
