"""The page's filter list, generated from the one filter table: ``python -m auditlogkit.query_api.core.page_filters`` writes
``query_api/static/js/filter_table.js`` (a unit test fails while the file differs from :func:`render`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from auditlogkit.query_api.read.filters import FILTERS

TARGET = Path(__file__).parents[1] / "static" / "js" / "filter_table.js"


def render() -> str:
    """The JS module: every filter with a page label, in table order, as ``[name, label, widget]``."""
    rows = [json.dumps([s.name, s.label, s.widget], ensure_ascii=False) for s in FILTERS if s.label]
    return ("// Generated from FILTERS in query_api/read/filters.py by `python -m auditlogkit.query_api.core.page_filters`; do not "
            "edit.\n"
            "\n"
            "/** The API's filters that the page offers, in table order: [query parameter, chip label, widget]. */\n"
            "export const FILTERS = [\n" + "".join(f"  {r},\n" for r in rows) + "];\n")


def main() -> int:
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
