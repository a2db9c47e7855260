"""The client address: the peer, or X-Forwarded-For read right to left through trusted hops."""

from __future__ import annotations

import pytest

from authz.config.cidr import CidrSet, canonical_ip, forwarded_ip
from authz.stages.identify import client_ip

TRUSTED = CidrSet("trusted_proxies")
for block in ("10.0.0.0/8", "::1/128", "2001:db8:ffff::/48"):
    TRUSTED.add(block, "trusted")


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("10.0.0.1", None, "10.0.0.1"),
        ("192.0.2.9", "203.0.113.7", "192.0.2.9"),  # an untrusted peer's header is ignored
        ("10.0.0.1", "203.0.113.7", "203.0.113.7"),
        ("10.0.0.1", "198.51.100.1, 203.0.113.7, 10.0.0.2", "203.0.113.7"),  # rightmost untrusted
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),  # every hop trusted: the leftmost
        ("10.0.0.1", "203.0.113.7:4431", "203.0.113.7"),
        ("10.0.0.1", "[2001:DB8::7]:443", "2001:db8::7"),
        ("10.0.0.1", "2001:db8::7", "2001:db8::7"),
        ("10.0.0.1", "::ffff:203.0.113.7", "203.0.113.7"),  # IPv4-mapped: one spelling
        ("::1", "203.0.113.7", "203.0.113.7"),
        # a malformed entry ends the walk: the hop that wrote it (the last trusted address) is the client
        ("10.0.0.1", "garbage", "10.0.0.1"),
        ("10.0.0.1", "203.0.113.66, garbage", "10.0.0.1"),
        ("10.0.0.1", "203.0.113.66, garbage, 10.0.0.2", "10.0.0.2"),
        ("10.0.0.1", "garbage, 203.0.113.7", "203.0.113.7"),  # the walk never reaches it
        ("10.0.0.1", "203.0.113.66, , 10.0.0.2", "10.0.0.2"),  # an empty entry
        ("10.0.0.1", "1.2.3.4\r\nx-evil: 1", "10.0.0.1"),
        ("10.0.0.1", "unknown", "10.0.0.1"),
        ("10.0.0.1", "fe80::1%eth0", "10.0.0.1"),  # zone ids are refused
        ("10.0.0.1", "010.1.2.3", "10.0.0.1"),  # leading zeros: octal to some parsers
        ("10.0.0.1", "203.0.113.7:http", "10.0.0.1"),
        ("10.0.0.1", "x" * 10_000, "10.0.0.1"),
    ],
)
def test_client_address(peer: str, xff: str | None, client: str) -> None:
    assert client_ip(peer, xff, TRUSTED) == client


def test_no_trusted_proxies_means_the_peer() -> None:
    assert client_ip("10.0.0.1", "203.0.113.7", None) == "10.0.0.1"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:DB8:0:0:0:0:0:7", "2001:db8::7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::1", "::1"),
        ("", None),
        ("fe80::1%eth0", None),
        ("1.2.3.4\r\n", None),
        (" 1.2.3.4", None),
        ("1.2.3.4:80", None),
        ("localhost", None),
        ("1" * 100, None),
    ],
)
def test_canonical_ip(text: str, canonical: str | None) -> None:
    assert canonical_ip(text) == canonical


def test_long_entries_never_become_cache_keys() -> None:
    from authz.config import cidr

    before = cidr._forwarded_ip.cache_info().currsize
    for i in range(50):
        assert forwarded_ip(f"{i}" + "9" * 200) is None
    assert cidr._forwarded_ip.cache_info().currsize == before
