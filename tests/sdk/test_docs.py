"""docs/sdk.md cannot drift from what is tested: the FastAPI and Django examples it shows are the files the
integration tests run (tests/integration/test_up.py), and its "own tests" snippet runs here as written."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "sdk.md").read_text(encoding="utf-8")


def test_the_examples_shown_are_the_tested_files() -> None:
    for name in ("fastapi_service.py", "django_service.py"):
        code = (ROOT / "docs" / "examples" / name).read_text(encoding="utf-8").rstrip()
        assert f"```python\n{code}\n```" in DOC, f"docs/sdk.md does not show docs/examples/{name} as it is"


async def test_the_snippet_for_a_services_own_tests_runs() -> None:
    section = DOC.split("## In your own tests", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S)
    assert snippet is not None
    body = textwrap.indent(snippet.group(1), "    ")
    scope: dict[str, object] = {}
    exec(f"async def snippet():\n{body}", scope)  # our own documentation
    await scope["snippet"]()  # type: ignore[operator]
