"""Graceful stop of the long-running commands (``up``, ``consume``, ``api``): SIGTERM exactly as SIGINT.

Contract:
- :func:`stop_signals` (call it as early as possible) installs handlers that *record* SIGTERM and SIGINT
  instead of killing the process or raising ``KeyboardInterrupt``: a signal during start-up is not lost, the
  command sees :attr:`StopSignals.requested` and stops cleanly with exit code 0. A SIGINT that the process
  inherited as ignored (a background job of a shell script) stays ignored; SIGTERM always stops.
- :meth:`StopSignals.on_loop` (inside a running asyncio loop) calls ``callback(signal_name)`` on the loop for
  every signal, at once if one arrived earlier; when the block ends the recording handlers are back in place,
  so a late signal during the final clean-up cannot kill the process either.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


class StopSignals:
    """The stop signals of this process and whether one has arrived."""

    def __init__(self) -> None:
        self.signals: tuple[signal.Signals, ...] = ()
        self.requested: str | None = None  # name of the first stop signal received

    def install(self) -> StopSignals:
        """Record stop signals from now on (idempotent)."""
        if not self.signals:
            inherited_ignore = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            self.signals = (signal.SIGTERM,) if inherited_ignore else (signal.SIGTERM, signal.SIGINT)
        for sig in self.signals:
            signal.signal(sig, self._record)
        return self

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        self.requested = self.requested or signal.Signals(signum).name

    @contextmanager
    def on_loop(self, callback: Callable[[str], None]) -> Iterator[None]:
        """Within the block, each stop signal calls ``callback(name)`` on the running loop."""
        loop = asyncio.get_running_loop()

        def fire(name: str) -> None:
            self.requested = self.requested or name
            callback(name)

        for sig in self.signals:
            loop.add_signal_handler(sig, fire, sig.name)
        try:
            if self.requested:
                callback(self.requested)
            yield
        finally:
            for sig in self.signals:
                loop.remove_signal_handler(sig)
            self.install()


_STOP = StopSignals()


def stop_signals() -> StopSignals:
    """The process's :class:`StopSignals`, installed."""
    return _STOP.install()
