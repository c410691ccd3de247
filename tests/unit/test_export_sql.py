"""The SELECT of an export (query_api/export.py) for given filters: one rendered line per row, FINAL, scoped and
filtered by the ScopedQuery's conditions only, newest first, every value (filters, catalog labels) a bound
parameter. (tests/integration/test_api_export.py runs it.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from auditlogkit.query_api.read.export import CSV_COLUMNS, CSV_LINE_SQL, NDJSON_LINE_SQL, export_sql, label_params
from auditlogkit.query_api.read.filters import parse_filters
from auditlogkit.query_api.security.principal import Principal
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.rows import EVENTS_TABLE

CATALOG = get_catalog()
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
OWNER = Principal("u", "u@acme.example", "acme", "org_owner", (), frozenset({"audit:read", "audit:export"}))
ADMIN = Principal("u", "u@acme.example", "acme", "workspace_admin", ("w1", "w2"),
                  frozenset({"audit:read", "audit:export"}))
HOSTILE = "'; DROP TABLE audit_events; --"
PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*):")


def _sq(principal: Principal, **raw: object) -> ScopedQuery:
    return ScopedQuery(principal).with_filters(parse_filters(CATALOG, raw, now=NOW), CATALOG)


@pytest.mark.parametrize(("fmt", "line"), [("csv", CSV_LINE_SQL), ("ndjson", NDJSON_LINE_SQL)])
def test_select_without_filters(fmt: str, line: str) -> None:
    sql = export_sql(_sq(OWNER), fmt)
    assert sql == (f"SELECT {line} AS line FROM {EVENTS_TABLE} FINAL WHERE (org_id = {{s_org:String}}) AND "
                   "(occurred_at >= {f_start:DateTime64(3, 'UTC')}) AND (occurred_at <= {f_end:DateTime64(3, 'UTC')}) "
                   "ORDER BY occurred_at DESC, event_id DESC")


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_select_with_filters(fmt: str) -> None:
    sq = _sq(ADMIN, start="2026-03-01T00:00:00Z", scope="service", action=["vm.create", "vm.delete"],
             status="FAILED", workspace_id="w2", target=HOSTILE, q=HOSTILE)
    sql = export_sql(sq, fmt)
    where = sql.split(" WHERE ", 1)[1].rsplit(" ORDER BY ", 1)[0]
    assert where == sq.where()
    assert re.findall(r"\(([^()]*?)\{", where)[:2] == ["org_id = ", "workspace_id IN "]  # the tenant first
    for cond in ("(scope = {f_scope:String})", "(action IN {f_action:Array(String)})",
                 "(status = {f_status:String})", "(workspace_id = {f_workspace_id:String})",
                 "((target_id = {f_target:String} OR target_name = {f_target2:String}))", "LIKE {f_q:String}"):
        assert cond in where, cond
    assert "DROP" not in sql and "drop" not in sql  # values are parameters only
    params = {**sq.params, **label_params(CATALOG)}
    assert set(PLACEHOLDER.findall(sql)) == set(params)  # everything the query names is bound, nothing more
    assert params["f_start"] == datetime(2026, 3, 1, tzinfo=UTC) and params["f_end"] == NOW
    assert params["f_action"] == ["vm.create", "vm.delete"] and params["s_ws"] == ["w1", "w2"]
    assert params["f_target"] == params["f_target2"] == HOSTILE


def test_csv_line_has_one_cell_per_header_column() -> None:
    assert CSV_LINE_SQL.startswith("arrayStringConcat([") and CSV_LINE_SQL.endswith("], ',')")
    cells = CSV_LINE_SQL.count("concat('\"', replaceAll(")
    assert cells == len(CSV_COLUMNS)
    assert "concat('''', " in CSV_LINE_SQL  # formula-injection guard


def test_labels_are_parameters() -> None:
    labels = label_params(CATALOG)
    assert set(labels) == {"x_label_key", "x_scope_label", "x_category_label", "x_action_label"}
    assert len({len(v) for v in labels.values()}) == 1 and "service/vm.create" in labels["x_label_key"]
    for sql in (CSV_LINE_SQL, NDJSON_LINE_SQL):
        assert set(PLACEHOLDER.findall(sql)) == set(labels)
        assert not any(label in sql for label in labels["x_action_label"] if " " in label)  # no label text in the SQL
