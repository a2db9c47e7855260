"""Stage 1, route: find the policy route a request belongs to.

Routes are tried in file order; the first whose host, method and path all
match wins. Everything is compiled at policy load: hosts into a set plus
suffix wildcards, methods into a frozenset, paths into exact / prefix / regex.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from authz.stages.identify import IpRules

if TYPE_CHECKING:
    from authz.request import Request
    from authz.stages.authenticate import Authenticator
    from authz.stages.quota import Quota

#: stateful check families whose store failures fail open unless a route says otherwise
DEFAULT_FAIL_OPEN = frozenset({"quota"})
#: the stateful checks that exist (a kind is added with its check, not before)
CHECK_KINDS = frozenset({"quota", "replay"})


@dataclass(frozen=True, slots=True)
class Match:
    """The compiled match of a route. Empty host/method sets match everything."""

    hosts: frozenset[str] = frozenset()
    host_suffixes: tuple[str, ...] = ()
    methods: frozenset[str] = frozenset()
    path_exact: str | None = None
    path_prefix: str | None = None
    path_regex: re.Pattern[str] | None = None

    def matches(self, req: Request) -> bool:
        if self.methods and req.method not in self.methods:
            return False
        if self.hosts or self.host_suffixes:
            host = _strip_port(req.host)
            if host not in self.hosts and not host.endswith(self.host_suffixes):
                return False
        path = req.path
        if self.path_exact is not None:
            return path == self.path_exact
        if self.path_prefix is not None:
            return path.startswith(self.path_prefix)
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
    auth: tuple[Authenticator, ...] = ()
    anonymous: bool = True
    quotas: tuple[Quota, ...] = ()
    #: check families that admit the request when the store fails
    fail_open: frozenset[str] = DEFAULT_FAIL_OPEN


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
