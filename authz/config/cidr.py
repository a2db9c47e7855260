"""Address lists: CIDR blocks with labels, matched in a few dict lookups.

A list file has one entry a line: ``CIDR [label]``; ``#`` starts a comment;
blank lines are ignored. A bare address is a /32 (or /128) block::

    # scanners seen in October
    198.51.100.0/24   scanner-farm-a
    2001:db8::/32     example-v6
    203.0.113.7

Matching masks the address once per distinct prefix length in the list and
looks the result up in a dict, so a list of 100,000 entries costs the same as a
list of ten with the same prefix lengths.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from authz.errors import ConfigError


class _Blocks:
    """The blocks of a list: prefix length -> {network int: label}, longest prefixes first."""

    __slots__ = ("v4", "v6", "size")

    def __init__(self) -> None:
        self.v4: list[tuple[int, int, dict[int, str]]] = []
        self.v6: list[tuple[int, int, dict[int, str]]] = []
        self.size = 0


class CidrSet:
    """A set of CIDR blocks, each with a label, for IPv4 and IPv6.

    A list read from a file is read again with the whole policy when the file
    changes (server/reload.py): a request sees the old policy or the new one.
    """

    __slots__ = ("name", "_blocks")

    def __init__(self, name: str) -> None:
        self.name = name
        self._blocks = _Blocks()

    @property
    def size(self) -> int:
        return self._blocks.size

    def add(self, cidr: str, label: str) -> None:
        """Add a block. Raises ValueError for a malformed one."""
        net = ipaddress.ip_network(cidr, strict=False)
        blocks = self._blocks
        table = blocks.v4 if net.version == 4 else blocks.v6
        bits = 32 if net.version == 4 else 128
        mask = ((1 << net.prefixlen) - 1) << (bits - net.prefixlen)
        for plen, _mask, entries in table:
            if plen == net.prefixlen:
                entries.setdefault(int(net.network_address), label)
                break
        else:
            table.append((net.prefixlen, mask, {int(net.network_address): label}))
            table.sort(key=lambda t: -t[0])
        blocks.size += 1

    def match(self, ip: str) -> str | None:
        """The label of the most specific block containing ``ip``, or None.

        An unparsable address matches nothing.
        """
        parsed = _parse_ip(ip)
        if parsed is None:
            return None
        version, value = parsed
        blocks = self._blocks  # one read: a concurrent replace() is seen whole or not at all
        for _plen, mask, entries in blocks.v4 if version == 4 else blocks.v6:
            label = entries.get(value & mask)
            if label is not None:
                return label
        return None

    def __contains__(self, ip: str) -> bool:
        return self.match(ip) is not None


@lru_cache(maxsize=65536)
def _parse_ip(ip: str) -> tuple[int, int] | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.version, int(addr)


#: the longest text of an IP address (an IPv4-mapped IPv6 address in full)
_MAX_IP_CHARS = 45


@lru_cache(maxsize=65536)
def subnet_of(ip: str) -> str:
    """The /24 of an IPv4 address, the /64 of an IPv6 one ("" for something else)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def canonical_ip(text: str) -> str | None:
    """The canonical text of the IP address ``text``, or None when it is not one.

    IPv4 as a dotted quad (leading zeros are refused: ``010.0.0.1`` is octal to
    some parsers), IPv6 in RFC 5952 form (lower case, zeros compressed); an
    IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) becomes its IPv4 address, so
    one client has one spelling in lists, quotas and logs. A zone id
    (``fe80::1%eth0``) is refused: it names an interface of the host that wrote
    it, means nothing here, and Envoy never sends one. Cached: a request's
    addresses are parsed once per distinct text (only texts short enough to
    be an address become cache keys).
    """
    if not text or len(text) > _MAX_IP_CHARS:
        return None
    return _canonical_ip(text)


@lru_cache(maxsize=65536)
def _canonical_ip(text: str) -> str | None:
    if "%" in text:
        return None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


#: the longest X-Forwarded-For entry that can be an address: "[v6]:port" with spaces around
_MAX_ENTRY_CHARS = _MAX_IP_CHARS + 16


def forwarded_ip(entry: str) -> str | None:
    """The canonical address of one ``X-Forwarded-For`` entry, or None when it is malformed.

    An entry is an address, optionally with a port: ``203.0.113.7``,
    ``203.0.113.7:1234``, ``2001:db8::1``, ``[2001:db8::1]``,
    ``[2001:db8::1]:443`` (surrounding spaces and tabs ignored). Anything
    else (a name, ``unknown``, an empty entry, a zone id) is malformed.
    Cached like ``canonical_ip``.
    """
    if len(entry) > _MAX_ENTRY_CHARS:
        return None
    return _forwarded_ip(entry)


@lru_cache(maxsize=65536)
def _forwarded_ip(entry: str) -> str | None:
    entry = entry.strip(" \t")
    if entry.startswith("["):
        end = entry.find("]")
        if end < 0 or not _port_ok(entry[end + 1 :]):
            return None
        return canonical_ip(entry[1:end]) if ":" in entry[1:end] else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if not _port_ok(":" + port) or "." not in host:
            return None
        entry = host
    return canonical_ip(entry)


def _port_ok(rest: str) -> bool:
    # "" or ":" followed by 1-5 digits
    return not rest or (rest[0] == ":" and 1 < len(rest) <= 6 and rest[1:].isascii() and rest[1:].isdigit())


def parse_entry(text: str) -> tuple[str, str] | None:
    """Split one list line into (cidr, label); None for blank and comment lines."""
    body = text.split("#", 1)[0].strip()
    if not body:
        return None
    cidr, _, label = body.partition(" ")
    return cidr, label.strip()


def load_list_file(name: str, path: str, into: CidrSet | None = None) -> CidrSet:
    """Read a list file; errors name the file and the line."""
    out = into if into is not None else CidrSet(name)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ConfigError(path, 0, "", f"cannot read address list: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, 0, "", "address list is not valid UTF-8") from None
    for lineno, line in enumerate(lines, 1):
        entry = parse_entry(line)
        if entry is None:
            continue
        cidr, label = entry
        try:
            out.add(cidr, label or name)
        except ValueError:
            raise ConfigError(path, lineno, "cidr", f"not an IP address or CIDR block: {cidr!r}") from None
    return out
