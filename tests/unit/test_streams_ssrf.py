"""Where streams may send: https to public addresses; http, loopback, private and link-local only when
AUDITLOG_STREAMS_ALLOW_HOSTS lists them; a name is judged by every address it resolves to (here a resolver of
the test's, so names can resolve to anything) and the request is pinned to the checked address."""

from __future__ import annotations

import pytest

from auditlogkit.query_api.streams.ssrf import AllowList, SsrfError, check_url, is_public, resolve

NAMES = {"hooks.example.com": ["93.184.215.14"], "loop.test": ["127.0.0.1"], "ten.test": ["10.1.2.3"],
         "meta.test": ["169.254.169.254"], "mixed.test": ["93.184.215.14", "10.0.0.1"], "v6.test": ["::ffff:10.0.0.7"]}
NONE = AllowList()


def fake(host: str, port: int) -> list[str]:
    return NAMES.get(host, [])


@pytest.mark.parametrize("url", [
    "http://hooks.example.com/x",  # http
    "https://127.0.0.1/x", "https://[::1]/x", "https://localhost.localdomain.test/",  # loopback, unresolvable
    "https://loop.test/x", "https://ten.test/x", "https://meta.test/latest/meta-data",  # names to non-public
    "https://mixed.test/x", "https://v6.test/x", "https://100.64.0.1/x", "https://0.0.0.0/x",
    "https://user:pw@hooks.example.com/x", "ftp://hooks.example.com/x", "https:///x",
])
def test_refused_without_the_allow_list(url: str) -> None:
    with pytest.raises(SsrfError):
        check_url(url, NONE, fake)


def test_https_to_a_public_address_is_allowed_and_pinned() -> None:
    t = check_url("https://hooks.example.com:8443/in?x=1", NONE, fake)
    assert (t.host, t.port, t.address) == ("hooks.example.com", 8443, "93.184.215.14")
    assert t.pinned_url() == "https://93.184.215.14:8443/in?x=1" and t.host_header == "hooks.example.com:8443"


def test_the_allow_list_admits_listed_hosts_addresses_and_networks() -> None:
    allow = AllowList.parse("127.0.0.1, ten.test, 169.254.0.0/16")
    assert check_url("http://127.0.0.1:8080/h", allow, fake).address == "127.0.0.1"
    assert check_url("http://loop.test:8080/h", allow, fake).address == "127.0.0.1"  # resolves to a listed address
    assert check_url("https://ten.test/h", allow, fake).address == "10.1.2.3"  # a listed name
    assert check_url("https://meta.test/h", allow, fake).address == "169.254.169.254"  # a listed network
    with pytest.raises(SsrfError, match="not a public address"):
        check_url("https://mixed.test/h", allow, fake)  # 10.0.0.1 is not listed


async def test_the_send_time_check_resolves_again() -> None:
    names = {"flip.test": ["93.184.215.14"]}

    def flipping(host: str, port: int) -> list[str]:
        return names[host]

    assert check_url("https://flip.test/", NONE, flipping).address == "93.184.215.14"
    names["flip.test"] = ["127.0.0.1"]  # DNS changed after the stream was configured
    with pytest.raises(SsrfError, match=r"127\.0\.0\.1"):
        await resolve("https://flip.test/", NONE, flipping)


def test_mapped_and_nat64_addresses_count_as_their_ipv4() -> None:
    import ipaddress

    assert not is_public(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not is_public(ipaddress.ip_address("64:ff9b::a00:1"))
    assert is_public(ipaddress.ip_address("2606:4700::1111"))
