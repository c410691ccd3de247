"""``auditlog --help`` and every subcommand's help state every flag and argument (a flag without help is one a user
has to read the code for)."""

from __future__ import annotations

import argparse
import subprocess
import sys

from auditlogkit.server.app.cli import build_parser


def _undocumented(p: argparse.ArgumentParser, path: str) -> list[str]:
    out = []
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                out += _undocumented(sp, f"{path} {name}")
        elif a.dest != "help" and not (a.help and a.help.strip()):
            out.append(f"{path} {'/'.join(a.option_strings) or a.dest}")
    return out


def test_every_flag_of_every_subcommand_has_help() -> None:
    assert _undocumented(build_parser(), "auditlog") == []


def test_emit_help_names_the_fields_its_flags_set() -> None:
    r = subprocess.run([sys.executable, "-m", "auditlogkit.server.app.cli", "emit", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    for field in ("org_id", "actor.id", "target.type", "occurred_at", "event_id", "SUCCESS or FAILED"):
        assert field in r.stdout, field
