"""``StopSignals`` in a real child process: SIGTERM (and SIGINT, unless the process inherited it as ignored) is
recorded instead of killing the process, and ``on_loop`` hands signals to a running asyncio loop."""

from __future__ import annotations

import signal
import subprocess
import sys

CHILD = r"""
import asyncio, os, signal, sys
from auditlogkit.server.stopsignals import stop_signals

stops = stop_signals()
print("handled", sorted(s.name for s in stops.signals))
os.kill(os.getpid(), signal.SIGINT)
os.kill(os.getpid(), signal.SIGTERM)
print("after kill", stops.requested)

async def main() -> None:
    got: list[str] = []
    with stops.on_loop(got.append):
        print("at entry", got)  # a signal that arrived before: handed over at once
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(500):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
    print("on loop", got)

asyncio.run(main())
os.kill(os.getpid(), signal.SIGTERM)  # after the loop: recorded again, not fatal
print("exit", stops.requested)
"""


def run_child(ignore_sigint: bool) -> list[str]:
    def preexec() -> None:  # the child's SIGINT disposition is set either way: a runner started in the
        # background by a script hands its children an ignored SIGINT
        signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else signal.SIG_DFL)

    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=30,
                         preexec_fn=preexec)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_sigterm_and_sigint_are_recorded() -> None:
    assert run_child(ignore_sigint=False) == [
        "handled ['SIGINT', 'SIGTERM']", "after kill SIGINT", "at entry ['SIGINT']", "on loop ['SIGINT', 'SIGTERM']",
        "exit SIGINT"]


def test_inherited_ignored_sigint_stays_ignored_and_sigterm_still_stops() -> None:
    assert run_child(ignore_sigint=True) == [
        "handled ['SIGTERM']", "after kill SIGTERM", "at entry ['SIGTERM']", "on loop ['SIGTERM', 'SIGTERM']",
        "exit SIGTERM"]
