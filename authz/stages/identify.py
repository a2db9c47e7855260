"""Stage 2, identify: who is asking, before any proof.

The client address is the connection's peer (which the door has already
checked is an IP address, in canonical form), unless the peer is a trusted
proxy: then ``X-Forwarded-For`` is read from the right, skipping trusted
hops, and the first untrusted address is the client (the leftmost one if
every hop is trusted). An address the client wrote itself is never believed
unless every hop after it is trusted, and a malformed entry is never an
identity: the walk stops at the last trusted hop before it.

Address lists then apply: ``deny`` lists refuse (``ip.denied``), ``allow``
lists admit without further checks (``ok.ip_allowlisted``), and ``only`` lists
admit nobody else (``ip.not_allowed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from authz.config.cidr import CidrSet, forwarded_ip
from authz.decision import IP_DENIED, IP_NOT_ALLOWED

if TYPE_CHECKING:
    from authz.stages.context import Ctx


@dataclass(frozen=True, slots=True)
class IpRules:
    """Address lists of a route (the policy's global ones included)."""

    deny: tuple[CidrSet, ...] = ()
    allow: tuple[CidrSet, ...] = ()
    only: tuple[CidrSet, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.deny or self.allow or self.only)


def client_ip(peer_ip: str, xff: str | None, trusted: CidrSet | None) -> str:
    """The client address, honouring X-Forwarded-For only through trusted proxies.

    The walk goes right to left from the (trusted) peer, skipping trusted
    hops; the first untrusted address is the client, in canonical form. An
    entry that is not an address (``garbage``, ``unknown``, an empty entry,
    ``1.2.3.4\\r\\n...``) ends the walk: the hop that wrote it, the last
    trusted address seen, is the client. Entries are parsed once per distinct
    text (``forwarded_ip`` is cached).
    """
    if trusted is None or not xff or peer_ip not in trusted:
        return peer_ip
    client = peer_ip
    for entry in reversed(xff.split(",")):
        hop = forwarded_ip(entry)
        if hop is None:
            return client
        if hop not in trusted:
            return hop
        client = hop
    return client


def check_ip_rules(ctx: Ctx, rules: IpRules) -> bool:
    """Apply address lists. Returns True when an ``allow`` list admitted the client."""
    ip = ctx.identity.client_ip
    for lst in rules.deny:
        label = lst.match(ip)
        if label is not None:
            ctx.signals.append(("ip.list", f"{lst.name}:{label}"))
            ctx.refuse(IP_DENIED)
            return False
    for lst in rules.allow:
        label = lst.match(ip)
        if label is not None:
            ctx.signals.append(("ip.list", f"{lst.name}:{label}"))
            return True
    if rules.only:
        for lst in rules.only:
            label = lst.match(ip)
            if label is not None:
                ctx.signals.append(("ip.list", f"{lst.name}:{label}"))
                return False
        ctx.refuse(IP_NOT_ALLOWED)
    return False
