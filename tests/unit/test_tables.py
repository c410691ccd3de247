"""``schemas/tables.py`` names exactly the tables and views the migrations create (their materialized views
``<name>_mv`` aside: nothing in the code refers to those)."""

from __future__ import annotations

import re
from pathlib import Path

from auditlogkit.schemas import tables

MIGRATIONS = Path(tables.__file__).parent / "migrations"
_CREATE = re.compile(r"CREATE (?:OR REPLACE )?(?:TABLE|VIEW) (?:IF NOT EXISTS )?\{db\}\.(\w+)")


def test_the_names_are_the_objects_the_migrations_create() -> None:
    created = {m for f in sorted(MIGRATIONS.glob("*.sql")) for m in _CREATE.findall(f.read_text(encoding="utf-8"))}
    assert created == set(tables.MIGRATED_OBJECTS)
    assert len(set(tables.MIGRATED_OBJECTS)) == len(tables.MIGRATED_OBJECTS)


def test_the_migrators_own_tables_are_not_among_them() -> None:
    assert not {tables.MIGRATIONS_TABLE, tables.CLAIMS_TABLE} & set(tables.MIGRATED_OBJECTS)
