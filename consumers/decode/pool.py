"""Decoding in helper processes: the consumer's CPU-heavy work (validate + encode) off the fetching process.

Why: validation and row encoding are pure Python and would share the GIL with the Kafka client; moved out, the
fetching process only fetches, batches and commits (see docs/architecture-notes.md).

Contract:
- ``DecodePool(processes, catalog, type_names)``; ``await pool.decode(chunks)`` returns one
  :class:`~auditlogkit.consumers.decode.decoder.DecodedChunk` per :class:`~auditlogkit.consumers.decode.decoder.Chunk`, in order. Decoding is a pure
  function of the chunk, so where it runs changes nothing but speed.
- ``processes == 0``: decoded in the calling thread, one chunk at a time, yielding to the event loop after each
  (an API served by the same loop stays responsive). ``> 0``: that many ``python -m auditlogkit.consumers.decode.helper``
  processes (plain subprocesses, not ``multiprocessing``: nothing of the parent's ``__main__`` is re-run, no
  chDB or asyncio state is forked). Each is driven by one thread of the pool over its stdin/stdout; each exits
  when its stdin closes, i.e. when the pool closes or the consumer dies (even by SIGKILL).
- A helper that died is replaced and its chunks are decoded again (safe: nothing of a chunk is kept before its
  result arrives); a helper that reports an error raises :class:`DecodeWorkerError`.
- :func:`shared_pool` gives every worker of one process the same pool for the same settings, catalog and
  columns (``auditlog consume --workers 3`` runs 3 workers over one set of processes); :func:`shutdown_pools`
  stops them (also at interpreter exit).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from auditlogkit.consumers.decode.decoder import Chunk, DecodedChunk, Decoder
from auditlogkit.consumers.decode.native import NativeEncoder
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.consumers.decode.pool")
_FRAME = struct.Struct("!Q")


class DecodeWorkerError(RuntimeError):
    """A decode helper failed on a chunk (a bug: decoding never raises for bad input)."""


def write_frame(out: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_FRAME.pack(len(data)))
    out.write(data)
    out.flush()


def read_frame(inp: IO[bytes]) -> Any:
    """The next object, or raise ``EOFError`` when the stream ended."""
    head = inp.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError("decode stream closed")
    (n,) = _FRAME.unpack(head)
    data = inp.read(n)
    if len(data) < n:
        raise EOFError("decode stream closed mid-frame")
    return pickle.loads(data)  # frames come only from our own helper process / its parent


class _Helper:
    """One helper process, used by one thread at a time."""

    def __init__(self, catalog: Catalog, type_names: tuple[str, ...], nice: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "auditlogkit.consumers.decode.helper", str(nice)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin, self.proc.stdout
        write_frame(self._in, (catalog, type_names))

    def call(self, chunks: list[Chunk]) -> list[DecodedChunk]:
        write_frame(self._in, chunks)
        status, payload = read_frame(self._out)
        if status != "ok":
            raise DecodeWorkerError(str(payload))
        result: list[DecodedChunk] = payload
        return result

    def close(self) -> None:
        for stream in (self._in, self._out):
            with contextlib.suppress(OSError):
                stream.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class DecodePool:
    def __init__(self, processes: int, catalog: Catalog, type_names: Sequence[str], nice: int = 0) -> None:
        self.processes = processes
        self.nice = nice
        self.catalog = catalog
        self.type_names = tuple(type_names)
        self._decoder = Decoder(catalog)
        self._encoder = NativeEncoder(self.type_names)
        self._idle: queue.SimpleQueue[_Helper | None] = queue.SimpleQueue()
        self._all: list[_Helper] = []
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(max(1, processes), thread_name_prefix="decode")
        self._started = False

    def start(self) -> None:
        """Start the helpers (importing their modules takes a while) before the first chunk needs them. A helper
        that cannot start is logged and retried on use (meanwhile its share is decoded in this process)."""
        with self._lock:
            if self._started or self.processes == 0:
                return
            self._started = True
        started = []
        for _ in range(self.processes):
            h = self._replace(None)
            if h is not None:
                try:
                    h.call([])  # wait until it is ready
                    started.append(h.proc.pid)
                except (EOFError, OSError) as exc:
                    log.error("decode_pool.helper_start_failed", error=repr(exc)[:200])
                    h.close()
                    with self._lock:
                        self._all.remove(h)
                    h = None
            self._idle.put(h)
        log.info("decode_pool.started", processes=self.processes, pids=started)

    def decode_here(self, chunks: Sequence[Chunk]) -> list[DecodedChunk]:
        return [self._decoder.decode_chunk(c, self._encoder) for c in chunks]

    def _call(self, chunks: list[Chunk]) -> list[DecodedChunk]:
        """Runs on a pool thread: take an idle helper, replace it if it died, give it back. If helpers cannot
        be (re)started, decode here: slower, but consuming goes on."""
        h: _Helper | None = self._idle.get()
        try:
            for attempt in range(3):
                if h is None:
                    h = self._replace(None)
                    continue
                try:
                    return h.call(chunks)
                except (EOFError, OSError) as exc:
                    log.warning("decode_pool.helper_died", pid=h.proc.pid, attempt=attempt + 1,
                                error=repr(exc)[:200])
                    h = self._replace(h)
            return self.decode_here(chunks)
        finally:
            self._idle.put(h)  # None keeps the pool's size: the next call tries to start a helper again

    def _replace(self, dead: _Helper | None) -> _Helper | None:
        """A new helper in place of ``dead`` (None if it cannot be started)."""
        if dead is not None:
            dead.close()
            with self._lock:
                if dead in self._all:
                    self._all.remove(dead)
        try:
            h = _Helper(self.catalog, self.type_names, self.nice)
        except OSError as exc:
            log.error("decode_pool.helper_start_failed", error=repr(exc)[:200])
            return None
        with self._lock:
            self._all.append(h)
        return h

    async def decode(self, chunks: Sequence[Chunk]) -> list[DecodedChunk]:
        if not chunks:
            return []
        if self.processes == 0:  # one chunk at a time, letting the event loop run in between (an API beside)
            out = []
            for c in chunks:
                out.append(self._decoder.decode_chunk(c, self._encoder))
                await asyncio.sleep(0)
            return out
        if not self._started:
            await asyncio.to_thread(self.start)
        loop = asyncio.get_running_loop()
        parts = _split(list(chunks), self.processes)
        results = await asyncio.gather(*(loop.run_in_executor(self._threads, self._call, p) for p in parts))
        return [d for part in results for d in part]

    def close(self) -> None:
        with self._lock:
            helpers, self._all = self._all, []
        for h in helpers:
            h.close()
        self._threads.shutdown(wait=False, cancel_futures=True)


def _split(chunks: list[Chunk], n: int) -> list[list[Chunk]]:
    """At most ``n`` groups of consecutive chunks with about the same number of messages each."""
    total = sum(len(c.values) for c in chunks)
    target = max(1, -(-total // n))
    parts: list[list[Chunk]] = [[]]
    size = 0
    for c in chunks:
        if size >= target and len(parts) < n:
            parts.append([])
            size = 0
        parts[-1].append(c)
        size += len(c.values)
    return parts


_shared: dict[tuple[int, str, tuple[str, ...], int], DecodePool] = {}
_shared_lock = threading.Lock()


def shared_pool(processes: int, catalog: Catalog, type_names: Sequence[str], nice: int = 0) -> DecodePool:
    """The process-wide pool for these arguments (created on first use)."""
    key = (processes, json.dumps(catalog.to_document(), sort_keys=True), tuple(type_names), nice)
    with _shared_lock:
        pool = _shared.get(key)
        if pool is None:
            pool = _shared[key] = DecodePool(processes, catalog, type_names, nice)
        return pool


def shutdown_pools() -> None:
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    for p in pools:
        p.close()


atexit.register(shutdown_pools)
