"""``detail`` is plain JSON (EVENT.md): NaN, Infinity and nesting deeper than 32 levels are refused with a reason,
and no input, however deep, makes :func:`schemas.parse_event` raise anything but :class:`EventError`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from auditlogkit.consumers.decode.decoder import Chunk, Decoder
from auditlogkit.schemas import EventError, parse_event
from auditlogkit.schemas.event import MAX_DETAIL_DEPTH
from tests.factories import make_event

DEEP = "nested deeper than 32 levels"
NOT_FINITE = "NaN, Infinity"


def nested(depth: int, leaf: Any = 1) -> Any:
    """``depth`` levels of alternating objects and lists around ``leaf``, built without recursion."""
    v = leaf
    for i in range(depth):
        v = {"k": v} if i % 2 else [v]
    return v


def nested_text(depth: int, opener: str = "[") -> str:
    """The JSON text of ``depth`` nested arrays (``[``) or objects (``{``) around ``1``."""
    if opener == "[":
        return "[" * depth + "1" + "]" * depth
    return '{"k":' * depth + "1" + "}" * depth


def with_raw(field: str, text: str) -> bytes:
    """A valid event whose ``field`` is replaced by the raw JSON ``text`` (which json.dumps could not write)."""
    ev = make_event()
    ev.pop(field, None)
    return (json.dumps(ev)[:-1] + f', "{field}": {text}}}').encode()


def rejected(data: Any) -> EventError:
    with pytest.raises(EventError) as exc:
        parse_event(data)
    return exc.value


def test_detail_of_32_levels_is_accepted_and_33_rejected_in_every_input_form() -> None:
    assert MAX_DETAIL_DEPTH == 32
    ok = {"a": nested(31)}  # the detail object is level 1
    assert parse_event(json.dumps(make_event(detail=ok)).encode()).detail == ok
    assert parse_event(make_event(detail=ok)).detail == ok
    for opener in "[{":
        assert parse_event(with_raw("detail", '{"a":' + nested_text(31, opener) + "}")).detail is not None
        err = rejected(with_raw("detail", '{"a":' + nested_text(32, opener) + "}"))
        assert (err.field, err.reason) == ("detail", DEEP)
    too_deep = {"a": nested(32)}
    for data in (json.dumps(make_event(detail=too_deep)).encode(), json.dumps(make_event(detail=too_deep)),
                 make_event(detail=too_deep)):
        err = rejected(data)
        assert (err.field, err.reason) == ("detail", DEEP)


@pytest.mark.parametrize("depth", [200, 5_000, 100_000])
@pytest.mark.parametrize("opener", ["[", "{"])
def test_a_very_deep_detail_is_a_clean_rejection_as_bytes_text_and_mapping(depth: int, opener: str) -> None:
    raw = with_raw("detail", '{"a":' + nested_text(depth, opener) + "}")
    for data in (raw, raw.decode(), bytearray(raw), make_event(detail={"a": nested(depth)})):
        err = rejected(data)
        assert (err.field, err.reason) == ("detail", DEEP), type(data)


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_deep_nesting_anywhere_is_a_clean_rejection(depth: int) -> None:
    arrays = nested_text(depth).encode()
    assert (rejected(arrays).field, rejected(arrays).reason) == ("message", DEEP)  # the whole message
    assert rejected(b'{"a": ' + arrays[: depth // 2]).reason == DEEP  # cut short, as a truncated message is
    for field in ("source", "actor", "colour"):
        err = rejected(with_raw(field, nested_text(depth, "{")))
        assert (err.field, err.reason) == (field, DEEP)
        err = rejected({**make_event(), field: nested(depth)})
        assert (err.field, err.reason) == (field, DEEP)
    with_nul = with_raw("detail", nested_text(depth, "{")).replace(b'"source": "', b'"source": "\\u0000')
    assert rejected(with_nul).field == "detail"
    text = "[{" * min(depth, 30_000)  # brackets in a string nest nothing
    assert parse_event(json.dumps(make_event(detail={"text": text})).encode()).detail == {"text": text}


def test_the_field_of_a_deep_part_is_named_unless_a_crafted_megabyte_comes_first() -> None:
    near = b'{"pad": [' + b"[]," * 1_000 + b'0], "detail": ' + b"[" * 5_000
    assert (rejected(near).field, rejected(near).reason) == ("detail", DEEP)
    crafted = b'{"pad": [' + b"[]," * 300_000 + b'0], "detail": ' + b"[" * 5_000  # the name is not worth 300k tokens
    assert (rejected(crafted).field, rejected(crafted).reason) == ("message", DEEP)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" + "0" * 400 + ".0"])
def test_nan_infinity_and_out_of_range_numbers_in_the_raw_message_are_rejected(token: str) -> None:
    for text in (f'{{"x": {token}}}', f'{{"x": [1, {{"y": [{token}]}}]}}'):
        err = rejected(with_raw("detail", text))
        assert err.field == "detail" and err.reason.startswith(NOT_FINITE), err
    for field in ("source", "schema_version"):
        err = rejected(with_raw(field, token))
        assert err.field == field and err.reason.startswith(NOT_FINITE), err


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_in_a_mapping_are_rejected(value: float) -> None:
    err = rejected(make_event(detail={"ratio": value}))
    assert err.field == "detail" and err.reason.startswith(NOT_FINITE)
    err = rejected(make_event(detail={"a": [{"b": (1, value)}]}))
    assert err.field == "detail" and err.reason.startswith(NOT_FINITE)
    err = rejected(make_event(actor={"id": value}))
    assert err.field == "actor.id" and err.reason.startswith(NOT_FINITE)


@pytest.mark.parametrize("text", ['{"x": 1' + "0" * 5_000 + "}", '{"x": "\\ud800"}', '{"x": 1, "x": NaN'])
def test_text_both_json_parsers_refuse_differently_is_a_clean_rejection(text: str) -> None:
    for data in (with_raw("detail", text), with_raw("detail", text).decode()):
        err = rejected(data)
        assert err.field in ("message", "detail") and err.reason, err
    assert rejected(make_event(detail={"x": 10**5_000})).field == "message"  # beyond Python's int-to-text limit


def test_plain_numbers_and_lookalike_text_stay_valid() -> None:
    detail = {"ratio": 0.25, "max": 1.7976931348623157e308, "tiny": 5e-324, "big": 10**400,
              "words": "NaN Infinity [[[[ {{{{", "NaN": None}
    ev = parse_event(json.dumps(make_event(detail=detail)).encode())
    assert ev.detail == detail
    assert json.loads(ev.to_json_bytes())["detail"] == detail


def test_the_consumer_dead_letters_nan_and_deep_messages_with_the_reason() -> None:
    values: list[bytes | None] = [
        json.dumps(make_event()).encode(),
        with_raw("detail", '{"ratio": NaN}'),
        with_raw("detail", nested_text(5_000, "{")),
        nested_text(100_000).encode(),
        json.dumps(make_event()).encode(),
    ]
    chunk = Chunk("audit.events", 0, list(range(len(values))), values, datetime.now(UTC))

    class NoEncoder:
        def encode(self, rows: Any, tail: Any = ()) -> bytes:
            return b"%d rows" % len(rows)

    out = Decoder().decode_chunk(chunk, NoEncoder())  # type: ignore[arg-type]
    assert out.rows == 2
    assert [(i, f) for i, f, _ in out.invalid] == [(1, "detail"), (2, "detail"), (3, "message")]
    assert out.invalid[0][2].startswith(NOT_FINITE) and out.invalid[1][2] == out.invalid[2][2] == DEEP
