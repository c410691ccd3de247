"""Fuzz: 10k hypothesis-generated invalid messages mixed with valid ones. Every invalid
one is dead-lettered (exactly once, with a field and a reason), every valid one stored, the worker never dies."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from auditlogkit.consumers.kafka.dlq import H_FIELD, H_REASON, header
from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.schemas.event import EventError, parse_event
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.consumer_helpers import BackgroundWorker, count_events, publish, read_topic
from tests.factories import make_event, random_events

N_INVALID = 10_000

_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
_json = st.recursive(_json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                                       max_size=3), max_leaves=6)
_FIELDS = ["schema_version", "event_id", "occurred_at", "org_id", "workspace_id", "scope", "category", "action",
           "status", "actor", "target", "description", "detail", "source", "request_id"]


@st.composite
def invalid_message(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "drop", "retype", "extra", "actor", "catalog", "ts"]))
    ev = make_event()
    if kind == "bytes":
        return bytes(draw(st.binary(min_size=0, max_size=64)))
    if kind == "json":
        return json.dumps(draw(_json)).encode()
    if kind == "drop":
        ev.pop(draw(st.sampled_from(["event_id", "occurred_at", "org_id", "scope", "category", "action",
                                     "status", "actor"])))
    elif kind == "retype":
        ev[draw(st.sampled_from(_FIELDS))] = draw(st.one_of(st.integers(), st.lists(st.integers(), max_size=2),
                                                            st.floats(allow_nan=False)))
    elif kind == "extra":
        ev[draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in _FIELDS))] = draw(_json)
    elif kind == "actor":
        ev["actor"][draw(st.sampled_from(["ip", "email", "type"]))] = draw(st.text(max_size=16))
    elif kind == "catalog":
        ev[draw(st.sampled_from(["scope", "category", "action"]))] = draw(st.text(min_size=1, max_size=16))
    else:
        ev["occurred_at"] = draw(st.text(max_size=30))
    return json.dumps(ev).encode()


def _generate() -> list[bytes]:
    out: list[bytes] = []

    @hsettings(max_examples=N_INVALID // 5, database=None, deadline=None,
               suppress_health_check=list(HealthCheck))
    @given(st.lists(invalid_message(), min_size=10, max_size=10))
    def collect(msgs: list[bytes]) -> None:
        for msg in msgs:
            if len(out) >= N_INVALID:
                return
            try:
                parse_event(msg)
            except EventError:
                out.append(msg)

    collect()
    assert len(out) == N_INVALID, len(out)
    return out


@pytest.mark.timeout(170)
async def test_fuzzed_invalid_messages_all_dead_lettered(settings: Settings, store: Store) -> None:
    invalid = _generate()
    valid = [json.dumps(e).encode() for e in random_events(5_000, seed=99)]
    values: list[bytes | None] = [*invalid, *valid]
    random.Random(1).shuffle(values)
    settings = settings.model_copy(update={"dlq_limit_ratio": 1.0})  # this mix is 2/3 invalid on purpose
    await publish(settings.kafka_bootstrap, settings.topic, values)
    await publish(settings.kafka_bootstrap, settings.topic, [None], keys=[b"tombstone"])  # null value
    values.append(None)
    worker = ConsumerWorker(settings, store)
    async with BackgroundWorker(worker) as bw:
        await bw.until(lambda s: s["stored"] + s["dead_lettered"] >= len(values), 120)
        assert worker.status()["error"] is None
    assert count_events(store) == len(valid)
    dlq = await read_topic(settings.kafka_bootstrap, settings.dlq_topic)
    assert len(dlq) == N_INVALID + 1
    assert sorted((r.value or b"") for r in dlq) == sorted([*invalid, b""])
    assert all(header(r.headers, H_FIELD) and header(r.headers, H_REASON) for r in dlq)
