"""The column spec (schemas/columns.py) is the one list of audit_events' columns: the row encoder and the read
shape follow from it; the DDL, the pydantic event, the API model and the content hash's frozen column lists are
checked against it. The content hash is written out per version and never follows the spec: a digest recorded
before the spec existed is the digest computed now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from auditlogkit.query_api.models import EventOut
from auditlogkit.query_api.read.event_shape import EVENT_SHAPE, STORED
from auditlogkit.schemas.columns import BY_NAME, COLUMNS
from auditlogkit.schemas.event import AuditEvent, parse_event
from auditlogkit.schemas.rows import EVENT_COLUMNS, PROVENANCE_COLUMNS, event_row, event_values
from auditlogkit.server.db import content_hash as ch
from tests.factories import make_event, random_events
from tests.unit.test_event_shape import ddl_columns


def _leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    """The dotted paths of a model's non-model fields, nested models walked."""
    out: list[str] = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _leaves(ann, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


# ----- checked against the spec ------------------------------------------------------------------------------
def test_the_ddl_has_the_spec_columns_with_their_types() -> None:
    """The migrations' audit_events (0001 and every later ADD COLUMN), names and types; the real store's
    system.columns is compared in tests/integration/test_columns.py."""
    assert ddl_columns() == {c.name: c.ch_type for c in COLUMNS}


def test_every_event_field_is_one_column() -> None:
    sources = [c.source for c in COLUMNS if not c.provenance]
    assert len(sources) == len(set(sources))
    assert sorted(s for s in sources if s) == sorted(_leaves(AuditEvent))


def test_event_out_is_the_public_columns_and_the_labels() -> None:
    public = [c.public for c in COLUMNS if c.public is not None]
    assert len(public) == len(set(public))
    read_only = {"scope_label", "category_label", "action_label", "detail_omitted"}
    assert sorted(p for p in _leaves(EventOut) if p not in read_only) == sorted(public)


def test_the_read_shape_has_every_public_column_once() -> None:
    assert sorted(f.column or "" for f in STORED) == sorted(c.name for c in COLUMNS if c.public is not None)
    for f in STORED:
        c = BY_NAME[f.column or ""]
        assert (f.path, f.ch_type, f.json_text) == (c.public, c.ch_type, c.encode == "json")
    assert {f.name for f in EVENT_SHAPE if f.column is None} == {"scope_label", "category_label", "action_label",
                                                                "detail_omitted"}


def test_the_hash_versions_are_the_spec_hashed_in() -> None:
    """Each version's written-out list is the spec's columns marked for it, in spec order; provenance never."""
    assert set(ch.CONTENT_HASHES) == {v for c in COLUMNS for v in c.hashed_in}
    for v, h in ch.CONTENT_HASHES.items():
        assert h.version == v and h.tag == f"auditlog-content-v{v}"
        assert h.columns == tuple(c.name for c in COLUMNS if v in c.hashed_in)
    assert not any(c.hashed_in for c in COLUMNS if c.provenance)


# ----- derived from the spec -----------------------------------------------------------------------------------
def test_row_columns_follow_the_spec() -> None:
    assert tuple(c.name for c in COLUMNS) == EVENT_COLUMNS
    assert tuple(c.name for c in COLUMNS if c.provenance) == PROVENANCE_COLUMNS


def _resolve(ev: AuditEvent, path: str) -> Any:
    v: Any = ev
    for part in path.split("."):
        v = getattr(v, part)
    return v


def test_event_values_take_each_column_where_the_spec_says() -> None:
    evs = [parse_event(e) for e in random_events(200, seed=11)]
    evs.append(parse_event(make_event(detail=None, target={"name": None}, workspace_id=None)))
    own = [c for c in COLUMNS if not c.provenance]
    for ev in evs:
        vals = event_values(ev)
        assert len(vals) == len(own)
        for c, v in zip(own, vals, strict=True):
            raw = _resolve(ev, c.source or "")
            if c.encode == "json":
                assert v == ev.detail_json()
            elif c.encode == "text":
                assert v == (raw or "")
            else:
                assert v is raw or v == raw, c.name


# ----- the content hash: frozen --------------------------------------------------------------------------------
FIXED = {"event_id": "0f0e0d0c-0b0a-4908-8706-050403020100", "occurred_at": "2026-03-01T09:14:03.512Z",
         "org_id": "acme", "scope": "service", "category": "vm", "action": "vm.delete", "status": "FAILED",
         "actor": {"id": "u-1", "email": "kim@acme.example", "type": "user", "user_agent": "ua \u00e9"},
         "target": {"type": "vm", "id": "vm-1"}, "detail": {"a": [1, None], "b": "x"}, "request_id": "r-1"}
#: content_sha256 of FIXED's row, computed by the code before the spec existed (CONTENT_COLUMNS then derived
#: from EVENT_COLUMNS): the same event hashes the same, whatever columns the table has since
FIXED_V1 = "cb3a565e86b08c5a8661d951b2c0aba7ab6591c342bfcabc86bae15284ba306f"


def test_a_digest_recorded_before_is_the_digest_now() -> None:
    row = dict(zip(EVENT_COLUMNS, event_row(parse_event(FIXED), datetime(2026, 3, 1, 9, 14, 4, tzinfo=UTC), "t", 0,
                                            7, ("http", "svc")), strict=True))
    assert ch.content_sha256(row).hex() == FIXED_V1
    assert ch.content_sha256(row, 1).hex() == FIXED_V1
    # a column the table gained since is not hashed: the stored event's hash stays
    assert ch.content_sha256({**row, "extra": "anything"}).hex() == FIXED_V1


def test_the_v1_column_list_is_written_out() -> None:
    assert ch.CONTENT_VERSION == 1
    written = ("org_id", "occurred_at", "event_id", "schema_version", "workspace_id", "scope", "category", "action",
               "status", "actor_id", "actor_email", "actor_type", "actor_ip", "actor_user_agent", "target_type",
               "target_id", "target_name", "description", "detail", "source", "request_id")
    assert written == ch.CONTENT_COLUMNS_V1
    assert ch.CONTENT_COLUMNS is ch.CONTENT_COLUMNS_V1
    assert ch.CONTENT_HASHES[1].sql == ch.CONTENT_SHA256_SQL
    assert ch.CONTENT_SHA256_SQL.startswith("SHA256(concat('auditlog-content-v1', ")


def test_version_in_reads_the_tag() -> None:
    assert ch.version_in(f"CREATE MATERIALIZED VIEW db.v AS SELECT {ch.CONTENT_SHA256_SQL} AS h") == 1
    assert ch.version_in("SELECT SHA256(concat('auditlog-content-v9', x))") is None
    assert ch.version_in("SELECT 1") is None
