"""The consumer's decoder in chunks and in helper processes (auditlogkit.consumers.decode.decoder / native / pool).

Real chDB: the Native blocks are inserted into the migrated ``audit_events`` and read back; the helper processes
are real ``python -m auditlogkit.consumers.decode.helper`` processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from auditlogkit.consumers.decode.decoder import Chunk, Decoder
from auditlogkit.consumers.decode.native import NativeEncoder
from auditlogkit.consumers.decode.pool import DecodePool
from auditlogkit.consumers.store.inserter import Inserter
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.event import parse_event
from auditlogkit.schemas.rows import EVENT_COLUMNS, EVENTS_TABLE, event_row
from auditlogkit.server.settings import Settings, usable_cpus
from auditlogkit.server.store import Store
from tests.factories import make_event, random_events

NOW = datetime(2026, 11, 30, 12, 0, 0, 123000, tzinfo=UTC)


def _types(store: Store) -> tuple[str, ...]:
    ins = Inserter(store)
    try:
        return ins._types()
    finally:
        ins.close()


def _chunk(values: list[bytes | None], first: int = 100, stored_up_to: int = -1) -> Chunk:
    return Chunk("audit.events", 3, list(range(first, first + len(values))), values, NOW, stored_up_to)


def _mixed() -> tuple[list[bytes | None], list[dict[str, object]]]:
    valid = random_events(30, seed=21)
    values: list[bytes | None] = [json.dumps(e).encode() for e in valid]
    values.insert(4, b"\xff\xfe not utf-8")
    values.insert(9, json.dumps(make_event(action="vm.fly")).encode())
    values.insert(17, None)
    return values, valid


def test_decode_chunk_reports_each_invalid_message_by_index(store: Store) -> None:
    values, valid = _mixed()
    d = Decoder().decode_chunk(_chunk(values), NativeEncoder(_types(store)))
    assert d.rows == len(valid) and d.already_stored == 0
    assert [(i, f) for i, f, _ in d.invalid] == [(4, "message"), (9, "action"), (17, "message")]
    assert "not UTF-8" in d.invalid[0][2] and "vm.fly" in d.invalid[1][2] and "null" in d.invalid[2][2]


def test_rows_at_or_below_the_stored_watermark_are_counted_not_encoded(store: Store) -> None:
    values, _ = _mixed()
    enc = NativeEncoder(_types(store))
    d = Decoder().decode_chunk(_chunk(values, first=100, stored_up_to=109), enc)  # offsets 100..109
    assert d.already_stored == 8  # 10 messages, of which 4 and 9 (offsets 104, 109) are invalid
    assert d.rows == 30 - 8 and len(d.invalid) == 3  # invalid ones are reported whatever the watermark


def test_native_block_stores_exactly_what_a_column_insert_stores(store: Store) -> None:
    """The encoder writes the same values as clickhouse-connect's insert of :func:`event_row` tuples."""
    events = random_events(200, seed=22)
    events[0]["detail"] = {"unicode": "Zürich ✓", "n": 2**40, "nested": [1, None, {"a": "b"}]}
    events[1]["actor"]["ip"] = "2001:DB8:0:0:0:0:0:1"
    events[2]["workspace_id"] = None
    values = [json.dumps(e).encode() for e in events]
    d = Decoder().decode_chunk(_chunk(values, first=0), NativeEncoder(_types(store)))
    Inserter(store)._insert([d.block], d.rows, "t:3:0-199")
    c = store.client()
    c.command(f"CREATE TABLE ref AS {EVENTS_TABLE}")
    try:
        rows = [event_row(parse_event(v), NOW, "audit.events", 3, i) for i, v in enumerate(values)]
        c.insert("ref", rows, column_names=list(EVENT_COLUMNS))
        cols = ", ".join(EVENT_COLUMNS)
        ours = c.query(f"SELECT {cols} FROM {EVENTS_TABLE} ORDER BY kafka_offset").result_rows
        ref = c.query(f"SELECT {cols} FROM ref ORDER BY kafka_offset").result_rows
        assert len(ours) == 200 and ours == ref
    finally:
        c.command("DROP TABLE ref SYNC")


def test_a_retried_multi_block_insert_is_dropped_by_its_token(store: Store) -> None:
    """A batch's blocks are fixed once decoded, so every retry of its insert sends the same blocks and token."""
    values = [json.dumps(e).encode() for e in random_events(60, seed=23)]
    decoder, enc, ins = Decoder(), NativeEncoder(_types(store)), Inserter(store)
    try:
        parts = [decoder.decode_chunk(_chunk(values[i:i + 20], first=i), enc) for i in (0, 20, 40)]
        for _ in range(3):  # e.g. the first attempt landed but its answer timed out
            ins._insert([p.block for p in parts], 60, "audit.events:3:0-59:abc")
        assert store.client().query(f"SELECT count() FROM {EVENTS_TABLE}").result_rows[0][0] == 60
        ins._insert([p.block for p in parts], 60, "audit.events:3:0-59:abd")  # another range (new log): stored
    finally:
        ins.close()
    assert store.client().query(f"SELECT count() FROM {EVENTS_TABLE}").result_rows[0][0] == 120


async def test_helper_processes_decode_byte_for_byte_like_the_worker_process(store: Store) -> None:
    values, _ = _mixed()
    chunks = [_chunk(values[i:i + 7], first=i) for i in range(0, len(values), 7)]
    types = _types(store)
    here = DecodePool(0, get_catalog(), types)
    pool = DecodePool(2, get_catalog(), types)
    try:
        assert await pool.decode(chunks) == await here.decode(chunks)
    finally:
        pool.close()


async def test_a_killed_helper_is_replaced_and_its_chunks_decoded_again(store: Store) -> None:
    values = [json.dumps(e).encode() for e in random_events(50, seed=24)]
    pool = DecodePool(1, get_catalog(), _types(store))
    try:
        await asyncio.to_thread(pool.start)
        (old,) = [h.proc.pid for h in pool._all]
        os.kill(old, signal.SIGKILL)
        out = await pool.decode([_chunk(values)])
        assert out[0].rows == 50
        (new,) = [h.proc.pid for h in pool._all]
        assert new != old
    finally:
        pool.close()
    assert all(h.proc.poll() is not None for h in pool._all)


async def test_helpers_that_cannot_start_leave_decoding_to_the_worker_process(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    values, valid = _mixed()
    types = _types(store)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    pool = DecodePool(2, get_catalog(), types)
    try:
        await asyncio.to_thread(pool.start)
        assert pool._all == []
        out = await pool.decode([_chunk(values)])
        assert out == DecodePool(0, get_catalog(), types).decode_here([_chunk(values)])
        assert out[0].rows == len(valid)
    finally:
        pool.close()


def test_helpers_exit_when_the_consumer_is_sigkilled(tmp_path: object) -> None:
    code = (
        "from auditlogkit.consumers.decode.pool import DecodePool\n"
        "from auditlogkit.schemas.catalog import get_catalog\n"
        "from auditlogkit.schemas.rows import EVENT_COLUMNS\n"
        "p = DecodePool(2, get_catalog(), ['String'] * len(EVENT_COLUMNS))\n"
        "p.start()\n"
        "print('PIDS', *[h.proc.pid for h in p._all], flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = next(ln for ln in proc.stdout if ln.startswith("PIDS"))
    pids = [int(p) for p in line.split()[1:]]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(("processes", "url", "expected"), [
    (0, "chdb:///x", 0), (3, "http://127.0.0.1:8123", 3),
    (-1, "chdb:///x", max(0, min(4, usable_cpus() - 2))),
    (-1, "http://127.0.0.1:8123", min(4, usable_cpus())),
])
def test_decode_processes_setting(processes: int, url: str, expected: int) -> None:
    assert Settings(consumer_decode_processes=processes, clickhouse_url=url).decode_processes() == expected


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000\n", 1), ("100000 100000\n", 1), ("garbage", None),
])
def test_usable_cpus_follows_a_container_cpu_limit(tmp_path: Path, cpu_max: str, expected: int | None) -> None:
    f = tmp_path / "cpu.max"
    f.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(f) == (affinity if expected is None else min(affinity, expected))
    assert usable_cpus(tmp_path / "absent") == affinity


def test_consume_flag_overrides_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from auditlogkit.consumers.cli import settings_from_args as _settings
    from auditlogkit.server.app.cli import build_parser, main

    monkeypatch.setenv("AUDITLOG_CONSUMER_DECODE_PROCESSES", "3")
    assert _settings(build_parser().parse_args(["consume"])).decode_processes() == 3
    assert _settings(build_parser().parse_args(["consume", "--decode-processes", "0"])).decode_processes() == 0
    assert main(["consume", "--decode-processes", "-2"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err and "consumer_decode_processes" in err
