"""Every module's logger is named after the module (``get_logger("<module path>")``), so a log line says where
it came from and a search for the name finds the file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("auditlog", "consumers", "query_api", "schemas", "producers")
LITERAL = re.compile(r"""get_logger\(\s*["']([\w.]+)["']\s*\)""")


def test_every_logger_is_named_after_its_module() -> None:
    wrong = []
    seen = 0
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for name in LITERAL.findall(path.read_text()):
                seen += 1
                if name != module:
                    wrong.append(f"{path.relative_to(ROOT)}: get_logger({name!r}), module {module}")
    assert seen > 30  # the scan sees the project's loggers
    assert not wrong, "\n".join(wrong)
