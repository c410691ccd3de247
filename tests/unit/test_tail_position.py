"""A live tail's position text (query_api/tail_position.py): it round-trips, and anything this server secret did
not make for this topic (forged, edited, another secret or topic, the old unsigned form) is refused."""

from __future__ import annotations

import base64

import pytest

from auditlogkit.query_api.read import tail_position
from auditlogkit.server.signing import Purpose, ServerKeys

KEYS = ServerKeys("tail-position-test-secret-0123456789abcdef")
TOPIC = "audit.events"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("pos", [{}, {0: 5}, {0: 0, 3: 17, 9_999: tail_position.MAX_OFFSET}])
def test_round_trip(pos: dict[int, int]) -> None:
    text = tail_position.encode(pos, TOPIC, KEYS)
    assert tail_position.decode(text, TOPIC, KEYS) == pos
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_position_this_server_did_not_issue_is_refused() -> None:
    real = tail_position.encode({0: 5, 2: 40}, TOPIC, KEYS)
    raw = base64.urlsafe_b64decode(real + "=" * (-len(real) % 4))
    body, mac = raw[:-tail_position.MAC_BYTES], raw[-tail_position.MAC_BYTES:]
    other = ServerKeys("another-server-secret-0123456789abcdef")
    forged = (
        "MXwzYTQ2YTAwZXw",  # the old unsigned form, empty position: "replay everything"
        _b64(b"1|3a46a00e|0:5"),  # the old unsigned form with an offset
        _b64(body.replace(b"0:5", b"0:0") + mac),  # an edited offset under the real MAC
        _b64(body.replace(b"0:5,", b"") + mac),  # a partition dropped (= read it from its start)
        _b64(body + mac[:-1]),  # a truncated MAC
        _b64(body + bytes(16)),  # a made-up MAC
        _b64(body),  # no MAC
        tail_position.encode({}, TOPIC, other),  # another server secret
        tail_position.encode({0: 5, 2: 40}, "audit.other", KEYS),  # another topic
        _b64(b"2|" + KEYS.mac(Purpose.CURSOR, TOPIC.encode() + b"\x00" + b"2|")[:16]),  # the cursor key
        "", "x", "!!!!", real[:-2], real + "A", "A" * 200_001,
    )
    for text in forged:
        with pytest.raises(ValueError):
            tail_position.decode(text, TOPIC, KEYS)
    assert tail_position.decode(real, TOPIC, KEYS) == {0: 5, 2: 40}
