"""Stage 2, identify (geography): the client's country and network, and country rules.

The policy's ``geo`` section names MaxMind-format databases the operator
provides (GeoLite2 / GeoIP2 Country or City, GeoLite2 ASN)::

    geo:
      country_database: GeoLite2-Country.mmdb
      asn_database: GeoLite2-ASN.mmdb
      cache_size: 32768                      # addresses whose answers are kept (LRU)
      countries: {deny: [KP], allow: []}     # for every route; a route adds its own
      hosting_asns: {file: lists/hosting-asns.txt, strength: 1.0}   # evidence (stages.evidence)

Every request's client address is looked up once (the answer of both
databases is cached per address, per database version) and fills
``Identity.country`` (ISO 3166-1 alpha-2, "" when unknown) and
``Identity.asn`` (0 when unknown). The databases are held in memory
(``authz.config.geoip``) and reloaded when their files change.

Country rules: ``deny`` refuses the listed countries (403
``geo.country_denied``); ``allow`` admits only the listed ones (403
``geo.country_not_allowed``). A route's rules add to the global ones: a
country on either deny list is refused, and when both the global section and
the route have an allow list, the country must be on both. An address the
database does not know (private and loopback addresses, new allocations) has
no country: no deny list refuses it and no allow list admits it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from authz.config.geoip import AsnList, GeoDatabase, Kind, load_asn_file, open_database
from authz.config.source import Node
from authz.decision import Outcome, reason
from authz.errors import ConfigError

if TYPE_CHECKING:
    from authz.config.context import CompileContext
    from authz.stages.context import Ctx

GEO_COUNTRY_DENIED = reason(
    "geo.country_denied", Outcome.DENY, 403,
    "The client address is in a country on a `geo.countries.deny` list (global or the route's); the `geo.country` signal names it.",
)  # fmt: skip
GEO_COUNTRY_NOT_ALLOWED = reason(
    "geo.country_not_allowed", Outcome.DENY, 403,
    "The route admits only the countries of its `geo.countries.allow` list (and the global one) and the client's is not there, or is unknown (an address the database does not know).",
)  # fmt: skip

DEFAULT_CACHE_SIZE = 32768
_COUNTRY_CODE = re.compile(r"^[A-Z]{2}$")


class Geo:
    """The policy's GeoIP databases, swapped whole when a file is reloaded.

    ``identify`` answers from a bounded LRU cache keyed by the client
    address; installing a new database starts a new cache, so no answer of
    the old version outlives it.
    """

    __slots__ = ("country_db", "asn_db", "cache_size", "_lookup")

    def __init__(self, country_db: GeoDatabase | None, asn_db: GeoDatabase | None, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.country_db = country_db
        self.asn_db = asn_db
        self.cache_size = cache_size
        self._lookup: Callable[[str], tuple[str, int]] = self._new_lookup()

    def _new_lookup(self) -> Callable[[str], tuple[str, int]]:
        country_db, asn_db = self.country_db, self.asn_db  # this version, for the cache's whole life

        def lookup(ip: str) -> tuple[str, int]:
            return (
                country_db.country(ip) if country_db is not None else "",
                asn_db.asn(ip) if asn_db is not None else 0,
            )

        return lru_cache(maxsize=self.cache_size)(lookup) if self.cache_size else lookup

    def lookup(self, ip: str) -> tuple[str, int]:
        """(country code or "", AS number or 0) of a canonical address."""
        return self._lookup(ip)

    def identify(self, ctx: Ctx) -> None:
        ctx.identity.country, ctx.identity.asn = self._lookup(ctx.identity.client_ip)


@dataclass(frozen=True, slots=True)
class CountryRules:
    """A route's country rules, the global ones included."""

    deny: frozenset[str] = frozenset()
    #: each set must hold the client's country (the global list, the route's)
    allow: tuple[frozenset[str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.deny or self.allow)

    def joined(self, other: CountryRules) -> CountryRules:
        return CountryRules(deny=self.deny | other.deny, allow=self.allow + other.allow)


def check_countries(ctx: Ctx, rules: CountryRules) -> bool:
    """Apply country rules; True when the request was refused."""
    country = ctx.identity.country
    if country in rules.deny:
        ctx.signals.append(("geo.country", country))
        ctx.refuse(GEO_COUNTRY_DENIED)
        return True
    for allowed in rules.allow:
        if country not in allowed:
            ctx.signals.append(("geo.country", country or "unknown"))
            ctx.refuse(GEO_COUNTRY_NOT_ALLOWED)
            return True
    return False


# -- compiling the policy's sections -------------------------------------------------------------


@dataclass(slots=True)
class GeoSection:
    """What the policy's ``geo`` section compiles to."""

    geo: Geo | None = None
    countries: CountryRules = CountryRules()
    #: the hosting-provider AS numbers and the strength of their evidence
    hosting: AsnList | None = None
    hosting_strength: float = 1.0


def _file(node: Node, cc: CompileContext[Any]) -> str:
    path = cc.path(node)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        node.error(f"cannot read file {node.value!r} (looked for {path})")
    return path


def _database(node: Node, cc: CompileContext[Any], kind: Kind) -> GeoDatabase:
    """The database a field names, opened and checked; refused at the field."""
    path = _file(node, cc)
    try:
        return open_database(path, kind)
    except ConfigError as exc:
        node.error(f"{node.value!r}: {exc.message}")


def compile_geo(node: Node, cc: CompileContext[Any]) -> GeoSection:
    """The ``geo`` section: databases, global country rules, the hosting list."""
    if node.value is None:
        return GeoSection()
    node.keys(allowed={"country_database", "asn_database", "cache_size", "countries", "hosting_asns"})
    dbs: dict[Kind, GeoDatabase] = {}
    if node.has("country_database"):
        dbs["country"] = _database(node.get("country_database"), cc, "country")
    if node.has("asn_database"):
        dbs["asn"] = _database(node.get("asn_database"), cc, "asn")
    if not dbs:
        node.error("give country_database, asn_database or both")
    cache_size = node.get("cache_size", DEFAULT_CACHE_SIZE).int(min=0, max=1 << 22)
    geo = Geo(dbs.get("country"), dbs.get("asn"), cache_size)
    section = GeoSection(geo=geo)
    if node.has("countries"):
        section.countries = compile_countries(node.get("countries"), geo)
    if node.has("hosting_asns"):
        hnode = node.get("hosting_asns")
        hnode.keys(allowed={"file", "strength"}, required={"file"})
        if geo.asn_db is None:
            hnode.error("hosting_asns needs geo.asn_database (the AS number of each client comes from it)")
        section.hosting = load_asn_file("hosting", _file(hnode.get("file"), cc))
        section.hosting_strength = hnode.get("strength", 1.0).number(min=0.0, max=1.0)
    return section


def compile_countries(node: Node, geo: Geo | None) -> CountryRules:
    """``countries: {deny: [KP], allow: [DE, FR]}`` (global or a route's)."""
    node.keys(allowed={"deny", "allow"})
    if geo is None or geo.country_db is None:
        node.error("country rules need geo.country_database")
    lists: dict[str, frozenset[str]] = {}
    for key in ("deny", "allow"):
        if not node.has(key):
            continue
        codes: set[str] = set()
        for item in node.get(key).items():
            code = item.str()
            if not _COUNTRY_CODE.match(code):
                item.error(f"not a country code: {code!r} (ISO 3166-1 alpha-2, upper case: 'KP', 'DE')")
            if code in codes:
                item.error(f"{code!r} is listed twice")
            codes.add(code)
        if key == "allow" and not codes:
            node.get(key).error("an empty allow list would refuse every request; remove it, or list countries")
        lists[key] = frozenset(codes)
    both = lists.get("deny", frozenset()) & lists.get("allow", frozenset())
    if both:
        node.get("allow").error(f"{', '.join(sorted(both))} both denied and allowed")
    return CountryRules(deny=lists.get("deny", frozenset()), allow=(lists["allow"],) if "allow" in lists else ())


def compile_route_geo(node: Node, geo: Geo | None, global_rules: CountryRules) -> CountryRules:
    """A route's ``geo: {countries: {...}}``, joined with the global rules."""
    if node.value is None:
        return global_rules
    node.keys(allowed={"countries"})
    if not node.has("countries"):
        return global_rules
    return global_rules.joined(compile_countries(node.get("countries"), geo))
