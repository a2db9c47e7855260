"""The compiled policy: plain frozen objects, built once per load and swapped whole on reload.

The parts a stage owns are defined by the stage (``Route`` and ``Match`` in
``stages.route``, ``IpRules`` in ``stages.identify``, ``Quota`` in
``stages.quota``, the authentication methods in ``stages.authenticate``);
the policy only bundles them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from authz.config.cidr import CidrSet
from authz.keys import EMPTY_KEYRING, KeyRing
from authz.paths import NO_PROBLEM, PathProblem
from authz.stages.authenticate import Authenticator
from authz.stages.challenge import Challenger
from authz.stages.evidence import ClientIds, Evidence
from authz.stages.geo import Geo
from authz.stages.identify import IpRules
from authz.stages.quota import DistinctLimit, Quota
from authz.stages.reputation import ReputationStage
from authz.stages.respond import UPSTREAM_HEADERS
from authz.stages.route import CHECK_KINDS, DEFAULT_ON_STORE_ERROR, STORE_ERROR_MODES, Match, Route

__all__ = ["CHECK_KINDS", "DEFAULT_ON_STORE_ERROR", "STORE_ERROR_MODES", "IpRules", "Limits", "Match", "Policy", "Route"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a request may carry before any check runs."""

    max_headers: int = 128
    max_header_bytes: int = 65536
    max_target_bytes: int = 8192


@dataclass(frozen=True, slots=True, eq=False)
class Policy:
    file: str
    #: tried in order; a request no route matches is denied (route.no_match).
    #: A last route with an empty match is the catch-all.
    routes: tuple[Route, ...]
    trusted_proxies: CidrSet | None = None
    ip: IpRules = IpRules()
    limits: Limits = Limits()
    #: path problem classes a request may have (``paths.allow``); any other is request.ambiguous_path
    path_allow: PathProblem = NO_PROBLEM
    ip_lists: dict[str, CidrSet] = field(default_factory=dict)
    quotas: dict[str, Quota | DistinctLimit] = field(default_factory=dict)
    authenticators: dict[str, Authenticator] = field(default_factory=dict)
    #: the ``challenges`` section: proof-of-work challengers by name
    challengers: dict[str, Challenger] = field(default_factory=dict)
    keyring: KeyRing = EMPTY_KEYRING
    #: how evidence is weighed and kept (None: no route scores)
    reputation: ReputationStage | None = None
    #: every request header authz may set on an allowed request under this policy
    #: (its own x-authz-* and each method's, e.g. JWT claim headers); a client-sent
    #: one that this request's decision did not set is removed
    upstream_headers: frozenset[str] = UPSTREAM_HEADERS
    #: where "now" comes from: the wall clock ("system"), or the time the proxy received the
    #: request ("request"), used only within ``clock_max_skew_ms`` of the wall clock when serving
    clock: str = "system"
    clock_max_skew_ms: int = 5000
    #: the policy's content hash (12 hex digits of SHA-256 over its text): health, decisions, the admin API
    version: str = ""
    #: the GeoIP databases (country, AS number) of the ``geo`` section, None without one
    geo: Geo | None = None
    #: where the session and device ids and the TLS fingerprint are (``identify``)
    client_ids: ClientIds = ClientIds()
    #: what the identify step gathers as evidence (``evidence``, lists, hosting ASNs)
    evidence: Evidence = Evidence()
    #: the policy file and every file it read (keys, address lists, JWKS...): what a reload watches
    files: tuple[str, ...] = ()
    #: the policy file's text as it was compiled (the admin API's ShowPolicy)
    text: str = ""
