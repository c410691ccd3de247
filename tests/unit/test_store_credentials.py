"""AUDITLOG_CLICKHOUSE_USER / _PASSWORD reach a ClickHouse server as the HTTP credentials, over the URL's own,
with no URL encoding needed. A loopback HTTP server records what the client sends (no ClickHouse needed)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store


@pytest.fixture
def recorder() -> Iterator[tuple[int, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(dict(self.headers))
            self.send_response(516)  # what ClickHouse answers for bad credentials
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], seen
    srv.shutdown()
    srv.server_close()


def _basic(headers: dict[str, str]) -> str:
    auth = next(v for k, v in headers.items() if k.lower() == "authorization")
    assert auth.startswith("Basic ")
    return base64.b64decode(auth[6:]).decode()


@pytest.mark.parametrize(("user", "password", "expected"), [
    ("svc", "p@ss/w:rd?#%", "svc:p@ss/w:rd?#%"),  # settings win over the URL's credentials, raw characters kept
    (None, None, "urluser:urlpw"),                 # unset: the URL's
])
def test_settings_credentials_reach_the_server(recorder: tuple[int, list[dict[str, str]]], user: str | None,
                                               password: str | None, expected: str) -> None:
    port, seen = recorder
    s = Settings(clickhouse_url=f"http://urluser:urlpw@127.0.0.1:{port}", clickhouse_user=user,
                 clickhouse_password=password)
    store = Store.from_settings(s)
    with pytest.raises(Exception):  # noqa: B017 (the recorder refuses every request; we only read what was sent)
        store.client()
    assert seen and _basic(seen[0]) == expected
    assert "p@ss" not in repr(s)


def test_the_streams_repository_logs_in_as_the_streams_user(recorder: tuple[int, list[dict[str, str]]]) -> None:
    """The API's own user is read-only: stream configuration is read and written as AUDITLOG_STREAMS_CLICKHOUSE_USER
    (role auditlog_streams) on the same server; without it, and always on chDB, as the API's own user."""
    from auditlogkit.query_api.core.app import streams_store

    port, seen = recorder
    s = Settings(clickhouse_url=f"http://127.0.0.1:{port}", clickhouse_user="auditlog_api", clickhouse_password="a",
                 streams_clickhouse_user="auditlog_streams", streams_clickhouse_password="s:3/cret")
    store = Store.from_settings(s)
    repo = streams_store(s, store)
    assert repo is not store and (repo.url, repo.database) == (store.url, store.database)
    with pytest.raises(Exception):  # noqa: B017 (the recorder refuses every request)
        repo.client()
    assert _basic(seen[-1]) == "auditlog_streams:s:3/cret"
    unset = Settings(clickhouse_url=f"http://127.0.0.1:{port}", clickhouse_user="auditlog_api")
    assert streams_store(unset, store) is store
    embedded = Store("chdb:///tmp/nowhere")
    assert streams_store(s, embedded) is embedded
