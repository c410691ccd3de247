"""Every module's logger is named after the module (``get_logger("<module path>")``), so a log line says where
it came from and a search for the name finds the file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: each folder and the package it is installed as (auditlogkit/ links them)
INSTALLED_AS = {"auditlog": "auditlogkit.server", "consumers": "auditlogkit.consumers",
                "query_api": "auditlogkit.query_api", "schemas": "auditlogkit.schemas", "producers": "auditlogkit"}
LITERAL = re.compile(r"""get_logger\(\s*["']([\w.]+)["']\s*\)""")


def test_every_logger_is_named_after_its_module() -> None:
    wrong = []
    seen = 0
    for folder, package in INSTALLED_AS.items():
        for path in (ROOT / folder).rglob("*.py"):
            module = ".".join((package, *path.relative_to(ROOT / folder).with_suffix("").parts)).removesuffix(".__init__")
            for name in LITERAL.findall(path.read_text()):
                seen += 1
                if name != module:
                    wrong.append(f"{path.relative_to(ROOT)}: get_logger({name!r}), module {module}")
    assert seen > 30  # the scan sees the project's loggers
    assert not wrong, "\n".join(wrong)
