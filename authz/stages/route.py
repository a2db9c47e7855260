"""Stage 1, route: find the policy route a request belongs to.

Routes are tried in file order; the first whose host, method and path all
match wins. Everything is compiled at policy load: hosts into a set plus
suffix wildcards, methods into a frozenset, paths into exact / prefix /
subtree / regex. Paths match ``Request.route_path``, the canonical path
(authz.paths), never the raw one; ``ignore_case`` matches its case-folded
form against patterns folded the same way at load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from authz.stages.geo import CountryRules
from authz.stages.identify import IpRules

if TYPE_CHECKING:
    from authz.request import Request
    from authz.stages.authenticate import Authenticator
    from authz.stages.challenge import Challenger
    from authz.stages.quota import DistinctLimit, Quota
    from authz.stages.reputation import RouteReputation

#: what a stateful check family does when the store fails, unless a route says otherwise:
#: open (allow, tagged), closed (refuse 503), local (quotas only: a per-process bucket)
DEFAULT_ON_STORE_ERROR: dict[str, str] = {"quota": "open", "replay": "closed", "reputation": "open"}
CHECK_KINDS = frozenset(DEFAULT_ON_STORE_ERROR)
#: the modes each family accepts
STORE_ERROR_MODES: dict[str, frozenset[str]] = {
    "quota": frozenset({"open", "closed", "local"}),
    "replay": frozenset({"open", "closed"}),
    "reputation": frozenset({"open", "closed"}),
}


@dataclass(frozen=True, slots=True)
class Match:
    """The compiled match of a route. Empty host/method sets match everything."""

    hosts: frozenset[str] = frozenset()
    host_suffixes: tuple[str, ...] = ()
    methods: frozenset[str] = frozenset()
    path_exact: str | None = None
    path_prefix: str | None = None
    #: "/admin" matches "/admin", "/admin/" and "/admin/...", never "/administrator"
    path_subtree: str | None = None
    path_regex: re.Pattern[str] | None = None
    #: match ``Request.folded_route_path``; the patterns above are folded already
    ignore_case: bool = False

    def matches(self, req: Request) -> bool:
        if self.methods and req.method not in self.methods:
            return False
        if self.hosts or self.host_suffixes:
            host = _strip_port(req.host)
            if host not in self.hosts and not host.endswith(self.host_suffixes):
                return False
        path = req.folded_route_path if self.ignore_case else req.route_path
        if self.path_exact is not None:
            return path == self.path_exact
        if self.path_prefix is not None:
            return path.startswith(self.path_prefix)
        if self.path_subtree is not None:
            subtree = self.path_subtree  # stored with its trailing "/" ("/" for the root)
            return path.startswith(subtree) or path == subtree[:-1]
        if self.path_regex is not None:
            return self.path_regex.fullmatch(path) is not None
        return True


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """One compiled route: how it matches and the checks it runs."""

    name: str
    match: Match
    #: check (run the checks), allow (admit without checks), deny (refuse)
    action: str = "check"
    ip: IpRules = IpRules()
    #: country rules (``geo.countries``), the global ones included
    countries: CountryRules = CountryRules()
    auth: tuple[Authenticator, ...] = ()
    anonymous: bool = True
    #: the route's quotas, each with the route's cost override (None: the quota's own cost)
    quotas: tuple[tuple[Quota | DistinctLimit, int | None], ...] = ()
    #: quota tier (Identity.tier) -> the quotas that replace ``quotas`` for clients of that tier
    tiers: Mapping[str, tuple[tuple[Quota | DistinctLimit, int | None], ...]] = field(default_factory=dict)
    #: what the route does about reputation scores (None: the route does not score)
    reputation: RouteReputation | None = None
    #: check family -> open | closed | local, when the store fails
    on_store_error: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(DEFAULT_ON_STORE_ERROR))
    #: demand proof of work of every request (``challenge: <name>``; authz.stages.challenge)
    challenge: Challenger | None = None


def _strip_port(host: str) -> str:
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    colon = host.rfind(":")
    return host[:colon] if colon >= 0 and host[colon + 1 :].isdigit() else host


def match_route(routes: tuple[Route, ...], req: Request) -> Route | None:
    for route in routes:
        if route.match.matches(req):
            return route
    return None
