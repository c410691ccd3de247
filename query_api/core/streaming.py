"""A streamed response that never waits on its client for long.

Contract of :class:`BoundedStreamingResponse`: sends the body chunks of an async iterator; the stream ends early
when one chunk cannot be handed to a client that stops reading within ``stall_s`` (outcome ``stalled``; the
connection is closed without completing the response) or when the client disconnects (``disconnected``);
otherwise ``complete``, or ``failed`` when the iterator raises. ``on_end(outcome)`` runs exactly once after the
stream ended, whatever happened (free the export's slot, stop its query, record its outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.query_api.core.streaming")


class BoundedStreamingResponse(StreamingResponse):
    def __init__(self, content: AsyncIterator[bytes], *, stall_s: float,
                 on_end: Callable[[str], Awaitable[None]], media_type: str,
                 headers: Mapping[str, str] | None = None, status_code: int = 200) -> None:
        super().__init__(content, status_code=status_code, media_type=media_type, headers=headers)
        self.stall_s = stall_s
        self.on_end = on_end
        self.outcome = "complete"

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                try:
                    await asyncio.wait_for(
                        send({"type": "http.response.body", "body": chunk, "more_body": True}), self.stall_s)
                except TimeoutError:
                    self.outcome = "stalled"
                    return
                except OSError:
                    self.outcome = "disconnected"
                    return
        except Exception as exc:
            self.outcome = "failed"
            log.error("stream.failed", error=repr(exc))
            return
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self._stream(send))
        gone = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait({stream, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not stream.done():
                self.outcome = "disconnected"
                stream.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stream
        finally:
            gone.cancel()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            await self.on_end(self.outcome)


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
