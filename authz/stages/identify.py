"""Stage 2, identify: who is asking, before any proof.

The client address is the connection's peer, unless the peer is a trusted
proxy: then ``X-Forwarded-For`` is read from the right, skipping trusted
hops, and the first untrusted address is the client (the leftmost one if
every hop is trusted). An address the client wrote itself is never believed
unless every hop after it is trusted.

Address lists then apply: ``deny`` lists refuse (``ip.denied``), ``allow``
lists admit without further checks (``ok.ip_allowlisted``), and ``only`` lists
admit nobody else (``ip.not_allowed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from authz.config.cidr import CidrSet
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
    """The client address, honouring X-Forwarded-For only through trusted proxies."""
    if trusted is None or not xff or peer_ip not in trusted:
        return peer_ip
    hops = [h.strip() for h in xff.split(",")]
    for hop in reversed(hops):
        if hop and hop not in trusted:
            return _unbracket(hop)
    first = hops[0] if hops and hops[0] else peer_ip
    return _unbracket(first)


def _unbracket(hop: str) -> str:
    # "[2001:db8::1]:443" or "203.0.113.7:1234" -> the address alone
    if hop.startswith("["):
        return hop[1 : hop.find("]")] if "]" in hop else hop
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


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
