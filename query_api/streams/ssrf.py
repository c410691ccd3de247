"""Where a stream may send to: ``https`` on public addresses, anything else only where the operator allows it.

Contract:
- a destination URL must be ``https://host[:port]/...`` without user info; its host's addresses must all be public
  (not loopback, private, link-local, shared, reserved, multicast or unspecified; an IPv4 address mapped into
  IPv6 or NAT64 counts as that IPv4 address). ``http``, and a host that resolves to a non-public address, are
  allowed only when ``AUDITLOG_STREAMS_ALLOW_HOSTS`` lists the host's name, or lists every address it resolves
  to (addresses and CIDRs, e.g. ``127.0.0.1`` or ``10.0.0.0/8`` for development);
- :func:`check_url` is the check at configuration time; :func:`resolve` the one at send time (names can resolve
  differently by then): it returns the :class:`Target`, whose :attr:`~Target.address` is the checked address the
  request must connect to (:mod:`auditlogkit.query_api.streams.destinations.http` does; the TLS name stays the host's);
- refusals are :class:`SsrfError` with a message fit for the stream's owner (it names the host, never a secret);
- resolution is a :data:`Resolver` (host, port) -> addresses: :func:`system_resolver` by default, another one in
  tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class SsrfError(ValueError):
    """A destination this deployment does not send to."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (TCP)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SsrfError(f"host {host!r} does not resolve ({exc.strerror or exc})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class AllowList:
    """``AUDITLOG_STREAMS_ALLOW_HOSTS``: host names, addresses and CIDRs."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> AllowList:
        names: set[str] = set()
        nets: list[IPNetwork] = []
        for item in (text or "").split(","):
            item = item.strip().lower().strip("[]")
            if not item:
                continue
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                names.add(item.rstrip("."))
        return cls(frozenset(names), tuple(nets))

    def lists_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def lists_address(self, address: IPAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)


def _plain(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped or NAT64 IPv6 address, else ``address``."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is a public unicast address."""
    a = _plain(address)
    return a.is_global and not (a.is_multicast or a.is_unspecified or a.is_reserved)


@dataclass(frozen=True, slots=True)
class Target:
    """A checked destination URL and the address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def pinned_url(self) -> str:
        """:attr:`url` with its host replaced by :attr:`address` (the request goes there, and nowhere else)."""
        parts = urlsplit(self.url)
        addr = f"[{self.address}]" if ":" in self.address else self.address
        return urlunsplit((parts.scheme, f"{addr}:{self.port}", parts.path or "/", parts.query, ""))


def _split(url: str, allow: AllowList) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        raise SsrfError("the URL is not valid") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not host:
        raise SsrfError("the URL must be https://host/...")
    if parts.username is not None or parts.password is not None:
        raise SsrfError("the URL must not carry a user or password (use the destination's secret fields)")
    if any(ch in url for ch in "\r\n\t ") or "\\" in url:
        raise SsrfError("the URL must not contain spaces, control characters or backslashes")
    return scheme, host, port or (443 if scheme == "https" else 80)


def _check(url: str, scheme: str, host: str, port: int, addresses: list[str], allow: AllowList) -> Target:
    if not addresses:
        raise SsrfError(f"host {host!r} does not resolve")
    parsed: list[IPAddress] = []
    for text in addresses:
        try:
            parsed.append(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError:
            raise SsrfError(f"host {host!r} resolves to something that is not an IP address") from None
    named = allow.lists_name(host)
    all_listed = all(allow.lists_address(_plain(a)) or allow.lists_address(a) for a in parsed)
    for a in parsed:
        if not (is_public(a) or named or all_listed):
            raise SsrfError(f"host {host!r} resolves to {a}, which is not a public address (list it in "
                            "AUDITLOG_STREAMS_ALLOW_HOSTS to allow it)")
    if scheme == "http" and not (named or all_listed):
        raise SsrfError(f"http://{host} is not allowed: use https (or list the host in AUDITLOG_STREAMS_ALLOW_HOSTS)")
    return Target(url, scheme, host, port, str(parsed[0]))


def _addresses(host: str, port: int, resolver: Resolver) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        return resolver(host, port)


def check_url(url: str, allow: AllowList, resolver: Resolver = system_resolver) -> Target:
    """The configuration-time check (module contract); :class:`SsrfError` when refused."""
    scheme, host, port = _split(url, allow)
    return _check(url, scheme, host, port, _addresses(host, port, resolver), allow)


async def resolve(url: str, allow: AllowList, resolver: Resolver = system_resolver) -> Target:
    """The send-time check: resolves again (in a thread) and returns the address to connect to."""
    scheme, host, port = _split(url, allow)
    addresses = await asyncio.to_thread(_addresses, host, port, resolver)
    return _check(url, scheme, host, port, addresses, allow)
