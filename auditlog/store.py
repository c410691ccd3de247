"""ClickHouse access through clickhouse-connect only: one client API for a server and for embedded chDB.

Contract:
- :class:`Store` hands out one client **per thread** (:meth:`Store.client`): neither chDB nor a server client
  may be shared by threads. Never pass a client to another thread.
- All values reach SQL as server-side bound parameters (``{name:Type}``) or through ``insert``; identifiers
  (the database name) are checked by :func:`auditlogkit.server.settings.check_ident`.
- Schema changes live in :mod:`auditlogkit.server.db.migrations`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from auditlogkit.server.logs import get_logger
from auditlogkit.server.settings import Settings, check_ident

log = get_logger("auditlogkit.server.store")


def connect(url: str, database: str | None = None, **kwargs: Any) -> Client:
    """A new clickhouse-connect client for ``chdb:///dir`` or ``http(s)://user:pw@host:port``."""
    if database is not None:
        check_ident(database, "database name")
    return clickhouse_connect.get_client(dsn=url, database=database or "", **kwargs)


def _login(username: str | None, password: str | None) -> dict[str, Any]:
    """The ``username``/``password`` keyword arguments of :func:`connect` that are set."""
    return {k: v for k, v in (("username", username), ("password", password)) if v is not None}


def credentials(settings: Settings) -> dict[str, Any]:
    """``username``/``password`` keyword arguments from ``AUDITLOG_CLICKHOUSE_USER``/``_PASSWORD`` (when set)."""
    pw = settings.clickhouse_password.get_secret_value() if settings.clickhouse_password else None
    return _login(settings.clickhouse_user, pw)


class Store:
    """Per-thread clients for one ClickHouse (server or chDB path) and database."""

    def __init__(self, url: str, database: str = "auditlog", *, username: str | None = None,
                 password: str | None = None) -> None:
        """``username``/``password`` (server only) take precedence over credentials in ``url``."""
        self.url = url
        self.database = check_ident(database, "database name")
        self._credentials = {} if url.startswith("chdb:") else _login(username, password)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Client] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(settings.store_url, settings.clickhouse_database, **credentials(settings))

    @property
    def embedded(self) -> bool:
        return self.url.startswith("chdb://")

    def client(self) -> Client:
        """This thread's client (created on first use)."""
        c: Client | None = getattr(self._local, "client", None)
        if c is None:
            c = connect(self.url, self.database, **self._credentials)
            self._local.client = c
            with self._lock:
                self._clients.append(c)
        return c

    def admin_client(self) -> Client:
        """A client without a default database (to create it)."""
        return connect(self.url, None, **self._credentials)

    def ping(self) -> bool:
        try:
            return bool(self.client().query("SELECT 1").result_rows)
        except Exception:
            return False

    def close(self) -> None:
        with self._lock:
            for c in self._clients:
                with suppress(Exception):
                    c.close()
            self._clients.clear()
        self._local = threading.local()

    @contextmanager
    def session(self) -> Iterator[Client]:
        yield self.client()


_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
_SECRET_PARAM = re.compile(r"(?P<key>[?&][^=&#]*(?:pass|secret|token|key)[^=&#]*=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` safe to print or log: user and password replaced by ``***`` (``http://***@host:8123/db``) and the
    values of query parameters named like a password/secret/token/key replaced by ``***``; a ``chdb://`` URL
    or one without credentials is returned unchanged."""
    return _SECRET_PARAM.sub(r"\g<key>***", _USERINFO.sub(r"\g<scheme>***@", url))


def redact_text(text: str, url: str) -> str:
    """``text`` (e.g. an exception message) with ``url`` replaced by :func:`redact_url` of it, credentials of
    any other URL removed, and the password of ``url`` (3+ characters, raw or percent-decoded) masked."""
    out = _USERINFO.sub(r"\g<scheme>***@", text.replace(url, redact_url(url)) if url else text)
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password)} if password else ():
        if len(secret) >= 3:
            out = out.replace(secret, "***")
    return out


def redact_error(exc: BaseException, url: str) -> str:
    """``"<ExceptionType>: <message>"`` of a store failure, safe to print (:func:`redact_text`)."""
    return redact_text(f"{type(exc).__name__}: {exc}", url)
