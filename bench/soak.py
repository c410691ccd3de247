"""Soak-length runs of the suite's slow tests (pytest marker ``soak``): the 300k-message chaos run with >= 10
SIGKILLs of the consumer, and a 30 s store outage. ``scripts/test`` runs the same tests at CI size.

Usage: ``.venv/bin/python bench/soak.py [pytest args...]``. Prints each test's outcome and duration and writes
them to ``bench/results/soak.json``; exits as pytest did.
"""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from tempfile import TemporaryDirectory

from common import ROOT, machine, write_result


def main(argv: list[str]) -> int:
    with TemporaryDirectory() as tmp:
        report = Path(tmp) / "soak.xml"
        t0 = time.monotonic()
        code = subprocess.call([sys.executable, "-m", "pytest", "-m", "soak", "-p", "no:cacheprovider", "-q",
                                f"--junitxml={report}", *argv], cwd=ROOT)
        took = time.monotonic() - t0
        tests = []
        if report.exists():
            for case in ET.parse(report).getroot().iter("testcase"):
                failed = case.find("failure") is not None or case.find("error") is not None
                skipped = case.find("skipped") is not None
                tests.append({"test": f"{case.get('classname')}::{case.get('name')}",
                              "outcome": "failed" if failed else "skipped" if skipped else "passed",
                              "seconds": round(float(case.get("time") or 0.0), 1)})
    for t in tests:
        print(f"soak: {t['outcome']:7} {t['seconds']:7.1f} s  {t['test']}")
    path = write_result("soak", {"machine": machine(), "exit_code": code, "seconds": round(took, 1),
                                 "tests": tests})
    print(f"soak: exit {code} after {took:.0f} s -> {path}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
