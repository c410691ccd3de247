"""``python -m auditlogkit.server.s3disk``: see :mod:`auditlogkit.server.s3disk` for the contract."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import errno
import os
import sys

from auditlogkit.server.stopsignals import StopSignals

HOST = "127.0.0.1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m auditlogkit.server.s3disk", description="Durable S3 server for Tansu.")
    ap.add_argument("--root", required=True, help="directory of the objects (created if missing)")
    ap.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    ap.add_argument("--retention-hours", type=float, default=168.0,
                    help="batches older than this are deleted even if not consumed (default 168)")
    ap.add_argument("--janitor-seconds", type=float, default=10.0,
                    help="seconds between retention passes; 0 turns the janitor off (default 10)")
    a = ap.parse_args(argv)
    if not 0 <= a.port <= 65535:
        ap.error("--port must be in 0..65535")
    if a.retention_hours <= 0 or a.janitor_seconds < 0:
        ap.error("--retention-hours must be > 0 and --janitor-seconds >= 0")
    return a


async def serve(a: argparse.Namespace, signals: StopSignals) -> int:
    from auditlogkit.server.logs import get_logger
    from auditlogkit.server.s3disk import tansu
    from auditlogkit.server.s3disk.server import S3Server
    from auditlogkit.server.s3disk.store import DiskStore
    from auditlogkit.server.s3disk.wire import MAX_HEAD

    log = get_logger("auditlogkit.server.s3disk.__main__")
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="s3disk"))
    store = DiskStore(a.root)
    holes = tansu.Holes(tansu.HOLE_SECONDS)
    holes.recover(store)
    app = S3Server(store, holes)
    try:
        server = await asyncio.start_server(app.connection, HOST, a.port, reuse_address=True, limit=MAX_HEAD)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            log.error("s3disk.port_in_use", port=a.port, message=f"port {HOST}:{a.port} is already in use")
            return 2
        raise
    janitor = tansu.Janitor(store, holes, a.retention_hours * 3600)

    async def sweep() -> None:
        while True:
            await asyncio.sleep(a.janitor_seconds)
            try:
                await asyncio.to_thread(janitor.run_once)
            except Exception as e:
                log.exception("s3disk.janitor.failed", error=repr(e))

    stop = asyncio.Event()
    sweeper = asyncio.create_task(sweep()) if a.janitor_seconds > 0 else None
    with signals.on_loop(lambda _name: stop.set()):
        log.info("s3disk.started", root=store.root, port=a.port, pid=os.getpid(),
                 retention_hours=a.retention_hours, janitor_seconds=a.janitor_seconds)
        await stop.wait()
    server.close()
    janitor.stopping = True
    if sweeper is not None:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
    await app.close_connections()
    log.info("s3disk.stopped", signal=signals.requested, port=a.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    signals = StopSignals().install()  # a SIGTERM during start-up is recorded, not fatal
    a = parse_args(argv)
    from auditlogkit.server.logs import configure, get_logger

    configure()
    try:
        return asyncio.run(serve(a, signals))
    except OSError as e:
        get_logger("auditlogkit.server.s3disk.__main__").error("s3disk.failed", error=repr(e), root=a.root, port=a.port)
        return 1


if __name__ == "__main__":
    sys.exit(main())
