"""The streams key and the sealing of destinations' secrets: weak keys refused with a clear message, a key
generated once (0600) into the data directory, AES-GCM blobs bound to their stream, secrets masked when shown."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from auditlogkit.query_api.streams.keys import (
    SecretBox,
    StreamsKeyError,
    ensure_streams_key,
    mask,
    new_key_text,
    streams_key,
    weak_streams_key,
)


def test_weak_keys_are_refused_with_the_reason() -> None:
    assert weak_streams_key(None) == "it is not set"
    assert weak_streams_key("not base64 !!") == "it is not base64"
    assert "16 bytes" in str(weak_streams_key(base64.b64encode(b"x" * 16).decode()))
    assert "not random" in str(weak_streams_key(base64.b64encode(b"\x00" * 32).decode()))
    assert weak_streams_key(new_key_text()) is None
    with pytest.raises(StreamsKeyError, match="AUDITLOG_STREAMS_KEY is refused: it is not set"):
        streams_key(None)


def test_url_safe_and_unpadded_base64_are_accepted() -> None:
    raw = bytes(range(200, 232))
    for text in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        assert streams_key(text) == raw


def test_up_generates_one_key_per_data_directory(tmp_path: Path) -> None:
    first = ensure_streams_key(tmp_path)
    assert ensure_streams_key(tmp_path) == first and len(first) == 32
    assert stat.S_IMODE((tmp_path / "streams-key").stat().st_mode) == 0o600
    configured = new_key_text()
    assert ensure_streams_key(tmp_path, configured) == streams_key(configured)


def test_sealed_secrets_open_only_for_their_stream_and_key() -> None:
    box = SecretBox(streams_key(new_key_text()))
    blob = box.seal({"secret": "hunter2-hunter2"}, "s-1", "acme")
    assert "hunter2" not in blob and blob.startswith(f"v1.{box.key_id}.")
    assert box.open(blob, "s-1", "acme") == {"secret": "hunter2-hunter2"}
    assert box.seal({"secret": "hunter2-hunter2"}, "s-1", "acme") != blob  # a fresh nonce each time
    with pytest.raises(StreamsKeyError, match="another stream"):
        box.open(blob, "s-2", "acme")
    with pytest.raises(StreamsKeyError, match="another streams key"):
        SecretBox(streams_key(new_key_text())).open(blob, "s-1", "acme")
    assert "hunter2" not in repr(box)


def test_masks_show_the_last_four_only() -> None:
    assert mask("abcdefghijkl1234") == "••••1234"
    assert mask("short") == "••••"
