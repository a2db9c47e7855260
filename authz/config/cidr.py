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


class CidrSet:
    """A set of CIDR blocks, each with a label, for IPv4 and IPv6."""

    __slots__ = ("name", "_v4", "_v6", "size")

    def __init__(self, name: str) -> None:
        self.name = name
        # prefix length -> {network int: label}, longest prefixes first
        self._v4: list[tuple[int, int, dict[int, str]]] = []
        self._v6: list[tuple[int, int, dict[int, str]]] = []
        self.size = 0

    def add(self, cidr: str, label: str) -> None:
        """Add a block. Raises ValueError for a malformed one."""
        net = ipaddress.ip_network(cidr, strict=False)
        table = self._v4 if net.version == 4 else self._v6
        bits = 32 if net.version == 4 else 128
        mask = ((1 << net.prefixlen) - 1) << (bits - net.prefixlen)
        for plen, _mask, blocks in table:
            if plen == net.prefixlen:
                blocks.setdefault(int(net.network_address), label)
                break
        else:
            table.append((net.prefixlen, mask, {int(net.network_address): label}))
            table.sort(key=lambda t: -t[0])
        self.size += 1

    def match(self, ip: str) -> str | None:
        """The label of the most specific block containing ``ip``, or None.

        An unparsable address matches nothing.
        """
        parsed = _parse_ip(ip)
        if parsed is None:
            return None
        version, value = parsed
        for _plen, mask, blocks in self._v4 if version == 4 else self._v6:
            label = blocks.get(value & mask)
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
