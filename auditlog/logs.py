"""Logging, one way: every record (ours through structlog, and the standard library's: uvicorn, aiokafka, ...) is one
line on stderr in one format, with an ``event`` name, the ``logger`` name, level, time and fields.

Contract: :func:`configure` routes structlog and the standard library's root logger through structlog's
``ProcessorFormatter``: JSON (one object per line) in production, a readable console format on a terminal
(``fmt="auto"``: console when the stream is a TTY) or as chosen; the context bound with
``structlog.contextvars`` (the API binds ``request_id`` per request) is in every line, stdlib records included.
Event names are dotted and stable (``batch.flushed``, ``message.dead_lettered``, ``api.request``); never log
tokens or whole payloads.
"""

from __future__ import annotations

import io
import logging
import sys
from typing import Literal, TextIO, cast

import structlog

Format = Literal["auto", "json", "console"]
_QUIET = ("aiokafka", "kafka", "uvicorn.access")  # chatty below WARNING


def configure(level: str = "info", json: bool | None = None, file: TextIO | None = None, *,
              fmt: Format = "auto") -> None:
    """Route structlog and stdlib logging to ``file`` (default stderr) at ``level``; ``json`` (or ``fmt``) picks the
    format (default: JSON unless ``file`` is a terminal)."""
    out: TextIO = file or cast(TextIO, _Stderr())
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    if json is None:
        json = fmt == "json" or (fmt == "auto" and not _is_tty(out))
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=_is_tty(out))
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(lvl)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(lvl, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # their own handlers would print plain text
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


class _Stderr(io.TextIOBase):
    """Whatever ``sys.stderr`` is when a line is written (a test runner swaps and closes its captures; a thread that
    logs later must not write into a closed one)."""

    def write(self, s: str) -> int:
        return sys.stderr.write(s)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
