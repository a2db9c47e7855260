"""The compiled policy: plain frozen objects, built once per load and swapped whole on reload."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from authz.keys import EMPTY_KEYRING, KeyRing
from authz.policy.cidr import CidrSet
from authz.stages.route import Match

if TYPE_CHECKING:
    from authz.stages.authenticate import Authenticator
    from authz.stages.quota import Quota

#: stateful check families whose store failures fail open unless a route says otherwise
DEFAULT_FAIL_OPEN = frozenset({"quota", "reputation"})
CHECK_KINDS = frozenset({"quota", "replay", "reputation"})


@dataclass(frozen=True, slots=True)
class IpRules:
    deny: tuple[CidrSet, ...] = ()
    allow: tuple[CidrSet, ...] = ()
    only: tuple[CidrSet, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.deny or self.allow or self.only)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a request may carry before any check runs."""

    max_headers: int = 128
    max_header_bytes: int = 65536
    max_target_bytes: int = 8192


@dataclass(frozen=True, slots=True, eq=False)
class Route:
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


@dataclass(frozen=True, slots=True, eq=False)
class Policy:
    file: str
    #: tried in order; a request no route matches is denied (route.no_match).
    #: A last route with an empty match is the catch-all.
    routes: tuple[Route, ...]
    trusted_proxies: CidrSet | None = None
    ip: IpRules = IpRules()
    limits: Limits = Limits()
    ip_lists: dict[str, CidrSet] = field(default_factory=dict)
    quotas: dict[str, Quota] = field(default_factory=dict)
    authenticators: dict[str, Authenticator] = field(default_factory=dict)
    keyring: KeyRing = EMPTY_KEYRING
