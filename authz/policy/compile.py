"""Validate a policy file and compile it into a ``Policy``.

Every error is a ``ConfigError`` naming the file, the line and the field;
unknown keys are refused. Nothing here runs per request: what can be decided
at load (regexes, CIDR tables, quota intervals, method objects) is.

The schema, by example (examples/policy.yaml is the annotated version)::

    version: 1
    keys_file: keys.yaml                    # verification keys and HMAC secrets (authz.keys)
    trusted_proxies: [10.0.0.0/8]
    limits: {max_headers: 128, max_header_bytes: 65536, max_target_bytes: 8192}
    paths: {allow: [encoded_slash]}         # path classes requests may have (authz.paths)
    ip_lists:
      blocked: {file: lists/blocked.txt}
      office: {cidrs: ["203.0.113.0/24 office"]}
    ip: {deny: [blocked]}
    geo: {country_database: GeoLite2-Country.mmdb, countries: {deny: [KP]}}   # authz.stages.geo
    identify: {fingerprint: {header: x-ja4-fingerprint}}   # authz.stages.evidence
    evidence: {probes: {}, user_agent: {}}                 # authz.stages.evidence
    quotas:
      per-client: {limit: 100, window: 1m, burst: 20, by: client}
    challenges:
      default: {secret_file: secrets/challenge.key, ttl: 2m, base_difficulty: 16, max_difficulty: 24}
    routes:
      - name: api
        match: {hosts: [api.example.com], methods: [GET], path: {subtree: /v1}, ignore_case: true}
        auth: [anonymous]
        geo: {countries: {allow: [DE, FR]}}
        quota: [per-client]
        on_store_error: {quota: open, replay: closed}
        challenge: default                  # proof of work on every request (authz.stages.challenge)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re

from authz.config import source
from authz.config.cidr import CidrSet, load_list_file, parse_entry
from authz.config.context import CompileContext
from authz.config.source import Node
from authz.errors import ConfigError
from authz.keys import EMPTY_KEYRING, KeyRing, load_keys
from authz.keys.keystore import Keystore
from authz.keys.live import LiveKeyRing
from authz.paths import ALLOWABLE, BY_NAME, NEVER_ALLOWED, NO_PROBLEM, PathProblem, canonicalize, fold_case, names
from authz.policy.model import CHECK_KINDS, DEFAULT_ON_STORE_ERROR, STORE_ERROR_MODES, IpRules, Limits, Policy, Route
from authz.stages.authenticate import Authenticator, MethodKind, registered_kinds
from authz.stages.challenge import Challenger, compile_challengers
from authz.stages.evidence import ListSignal, compile_evidence, compile_identify, list_signal
from authz.stages.geo import GeoSection, compile_geo, compile_route_geo
from authz.stages.quota import DistinctLimit, Quota, compile_quotas
from authz.stages.reputation import RouteReputation, compile_reputation, compile_route_reputation
from authz.stages.respond import UPSTREAM_HEADERS
from authz.stages.route import Match

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d+)?$|^\[[0-9a-f:.]+\](:\d+)?$")


def load_policy(path: str, text: str | None = None, *, base_dir: str | None = None, keystore: Keystore | None = None) -> Policy:
    """Read, validate and compile a policy file.

    :param text: the policy's text, instead of reading ``path`` (errors still name ``path``)
    :param base_dir: where the files it names are, when not beside ``path`` (a candidate
        validated against the running policy's directory)
    :param keystore: a started keystore whose keys join the keys file's (authz.keys.live)
        and whose API keys serve the ``api_key`` methods
    :raises ConfigError: naming the file, line and field of the first problem
    """
    if text is None:
        text = source.read_text(path)
    root = source.load(path, text)
    base = base_dir if base_dir is not None else os.path.dirname(os.path.abspath(path))
    cc: CompileContext[KeyRing] = CompileContext(file=path, base_dir=base, keyring=EMPTY_KEYRING, keystore=keystore)
    policy = compile_policy(root, cc)
    return dataclasses.replace(policy, version=version_of(text, cc.reads), files=(path, *cc.reads), text=text)


def version_of(text: str, reads: list[str]) -> str:
    """12 hex digits of SHA-256 over the policy text and every file it read (name and content).

    A change to a keys file, an address list or a JWKS file is a new version,
    as much as a change to the policy file itself.
    """
    digest = hashlib.sha256(text.encode())
    for path in reads:
        digest.update(b"\0" + os.fsencode(path) + b"\0")
        try:
            with open(path, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
        except OSError as exc:  # read a moment ago; gone since: the version says so
            digest.update(f"unreadable:{exc.errno}".encode())
    return digest.hexdigest()[:12]


def compile_policy(root: Node, cc: CompileContext[KeyRing]) -> Policy:
    kinds = registered_kinds()
    sections = {k.section: k for k in kinds.values() if k.section}
    root.keys(
        allowed={
            "version", "keys_file", "trusted_proxies", "limits", "clock", "paths", "ip_lists", "ip", "geo", "identify",
            "evidence", "quotas", "challenges", "reputation", "routes", *sections,
        },
        required={"version", "routes"},
    )
    version = root.get("version")
    if version.int() != 1:
        version.error(f"unsupported policy version {version.value} (this authz reads version 1)")
    if root.has("keys_file"):
        node = root.get("keys_file")
        cc.keyring = load_keys(_readable(node, cc))
    if cc.keystore is not None:
        cc.keyring = LiveKeyRing(cc.keyring, cc.keystore)

    list_signals: list[ListSignal] = []
    lists = _ip_lists(root.get("ip_lists", {}), cc, list_signals)
    cc.shared["ip_lists"] = lists  # for methods that recognize clients by address (listed_bot)
    trusted = _trusted(root.get("trusted_proxies", []))
    limits = _limits(root.get("limits", {}))
    clock, max_skew = _clock(root.get("clock", "system"))
    path_allow = _paths(root.get("paths", {}))
    global_ip = _ip_rules(root.get("ip", {}), lists)
    geo = compile_geo(root.get("geo", None), cc)
    client_ids = compile_identify(root.get("identify", None))
    evidence = compile_evidence(
        root.get("evidence", None),
        lists=tuple(list_signals),
        hosting=geo.hosting,
        hosting_strength=geo.hosting_strength,
        ids=client_ids,
    )
    quotas_node = root.get("quotas", {})
    for name, qnode in quotas_node.entries():
        _name(name, qnode)
    quotas = compile_quotas(quotas_node, cc)
    challenges_node = root.get("challenges", {})
    for name, cnode in challenges_node.entries():
        _name(name, cnode)
    challengers = compile_challengers(challenges_node, cc)
    cc.shared["challengers"] = challengers  # for sections that challenge (reputation)

    authenticators: dict[str, Authenticator] = {}
    for section, kind in sections.items():
        node = root.get(section, {})
        for name, cfg in node.entries():
            _name(name, node.get(name))
            authenticators[f"{kind.kind}:{name}"] = kind.compile(name, cfg, cc)

    reputation = compile_reputation(root.get("reputation"), cc) if root.has("reputation") else None
    route_bits = _journey_bits(root.get("routes"))

    routes: list[Route] = []
    seen: dict[str, int] = {}
    for rnode in root.get("routes").items():
        route = _route(rnode, lists, quotas, authenticators, kinds, global_ip, path_allow, challengers, geo)
        if rnode.has("reputation"):
            rep = compile_route_reputation(rnode.get("reputation"), quotas, route_bits, route.name, reputation, challengers)
            route = dataclasses.replace(route, reputation=rep)
        elif route.name in route_bits:
            # a route others expect as a predecessor is tracked even when it does not score
            route = dataclasses.replace(route, reputation=RouteReputation(bit=route_bits[route.name]))
        if route.name in seen:
            rnode.get("name").error(f"route name {route.name!r} already used on line {seen[route.name]}")
        seen[route.name] = rnode.line
        routes.append(route)
    if not routes:
        root.get("routes").error("a policy needs at least one route")
    for rnode in root.get("routes").items():
        if rnode.has("reputation") and rnode.get("reputation").has("after"):
            for item in rnode.get("reputation").get("after").items():
                if item.value not in seen:
                    item.error(f"no route named {item.value!r} (a journey's predecessors are routes, by name)")

    upstream_headers = UPSTREAM_HEADERS.union(*(a.upstream_header_names() for a in authenticators.values()))
    return Policy(
        file=cc.file,
        routes=tuple(routes),
        trusted_proxies=trusted,
        ip=global_ip,
        limits=limits,
        clock=clock,
        clock_max_skew_ms=max_skew,
        path_allow=path_allow,
        ip_lists=lists,
        quotas=quotas,
        authenticators=authenticators,
        challengers=challengers,
        keyring=cc.keyring,
        upstream_headers=upstream_headers,
        reputation=reputation,
        geo=geo.geo,
        client_ids=client_ids,
        evidence=evidence,
    )


def _journey_bits(routes: Node) -> dict[str, int]:
    """A bit for every route some route's ``reputation.after`` names (its journey's predecessors)."""
    names: list[str] = []
    for rnode in routes.items():
        if isinstance(rnode.value, dict) and rnode.has("reputation") and isinstance(rnode.get("reputation").value, dict):
            rep = rnode.get("reputation")
            if rep.has("after"):
                for item in rep.get("after").items():
                    if isinstance(item.value, str) and item.value not in names:
                        names.append(item.value)
                        if len(names) > 30:
                            item.error("at most 30 routes can be journey predecessors")
    return {name: 1 << i for i, name in enumerate(names)}


def _readable(node: Node, cc: CompileContext[KeyRing]) -> str:
    """The path a file field names, refused at the field when it cannot be read."""
    path = cc.path(node)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        node.error(f"cannot read file {node.value!r} (looked for {path})")
    return path


def _name(name: str, node: Node) -> str:
    if not _NAME.match(name):
        node.error(f"invalid name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    return name


def _ip_lists(node: Node, cc: CompileContext[KeyRing], signals: list[ListSignal]) -> dict[str, CidrSet]:
    out: dict[str, CidrSet] = {}
    for name, lnode in node.entries():
        _name(name, lnode)
        lnode.keys(allowed={"file", "cidrs", "signal", "strength"})
        if not (lnode.has("file") or lnode.has("cidrs")):
            lnode.error("an address list needs 'file' or 'cidrs'")
        cset = CidrSet(name)
        if lnode.has("cidrs"):
            for item in lnode.get("cidrs").items():
                entry = parse_entry(item.str())
                if entry is None:
                    item.error("empty entry")
                try:
                    cset.add(entry[0], entry[1] or name)
                except ValueError:
                    item.error(f"not an IP address or CIDR block: {entry[0]!r}")
        if lnode.has("file"):
            load_list_file(name, _readable(lnode.get("file"), cc), into=cset)
        ls = list_signal(lnode, cset)
        if ls is not None:
            signals.append(ls)
        out[name] = cset
    return out


def _trusted(node: Node) -> CidrSet | None:
    items = node.items()
    if not items:
        return None
    cset = CidrSet("trusted_proxies")
    for item in items:
        try:
            cset.add(item.str(), "trusted")
        except ValueError:
            item.error(f"not an IP address or CIDR block: {item.value!r}")
    return cset


def _clock(node: Node) -> tuple[str, int]:
    """``clock: system | request`` or ``{source: request, max_skew: 5s}``."""
    if isinstance(node.value, str):
        return node.str(choices={"system", "request"}), 5000
    node.keys(allowed={"source", "max_skew"}, required={"source"})
    return node.get("source").str(choices={"system", "request"}), node.get("max_skew", "5s").duration_ms(min_ms=0)


def _limits(node: Node) -> Limits:
    node.keys(allowed={"max_headers", "max_header_bytes", "max_target_bytes"})
    d = Limits()
    return Limits(
        max_headers=node.get("max_headers", d.max_headers).int(min=1, max=10_000),
        max_header_bytes=node.get("max_header_bytes", d.max_header_bytes).int(min=256, max=1 << 20),
        max_target_bytes=node.get("max_target_bytes", d.max_target_bytes).int(min=16, max=1 << 20),
    )


def _paths(node: Node) -> PathProblem:
    """``paths: {allow: [...]}``: the path problem classes requests may have."""
    node.keys(allowed={"allow"})
    allow = NO_PROBLEM
    choices = ", ".join(sorted(ALLOWABLE))
    for item in node.get("allow", []).items():
        name = item.str()
        problem = BY_NAME.get(name)
        if problem is None:
            item.error(f"unknown path class {name!r} (allowable: {choices})")
        if problem & NEVER_ALLOWED:
            item.error(f"{name!r} cannot be allowed: no backend is known to read it as authz does (allowable: {choices})")
        if problem & allow:
            item.error(f"{name!r} is listed twice")
        allow |= problem
    return allow


def _ip_rules(node: Node, lists: dict[str, CidrSet]) -> IpRules:
    node.keys(allowed={"deny", "allow", "only"})

    def refs(key: str) -> tuple[CidrSet, ...]:
        out = []
        for item in node.get(key, []).items():
            name = item.str()
            if name not in lists:
                item.error(f"no address list named {name!r} in ip_lists")
            out.append(lists[name])
        return tuple(out)

    return IpRules(deny=refs("deny"), allow=refs("allow"), only=refs("only"))


def _match(node: Node, path_allow: PathProblem) -> Match:
    node.keys(allowed={"hosts", "methods", "path", "ignore_case"})
    hosts: set[str] = set()
    suffixes: list[str] = []
    for item in node.get("hosts", []).items():
        host = item.str()
        if host != host.lower() or not _HOST.match(host):
            item.error(f"not a lower-case host name or *.suffix: {host!r}")
        if host.startswith("*."):
            suffixes.append(host[1:])
        else:
            hosts.add(host)
    methods: set[str] = set()
    for item in node.get("methods", []).items():
        m = item.str()
        if m not in METHODS:
            item.error(f"not an HTTP method: {m!r} (upper case, one of {', '.join(sorted(METHODS))})")
        methods.add(m)
    ignore_case = node.get("ignore_case", False).bool()
    exact = prefix = subtree = None
    regex = None
    if node.has("path"):
        pnode = node.get("path")
        pnode.keys(allowed=set(_PATH_KINDS))
        given = [k for k in _PATH_KINDS if pnode.has(k)]
        if len(given) != 1:
            pnode.error(f"give exactly one of {', '.join(_PATH_KINDS)}")
        value_node = pnode.get(given[0])
        value = value_node.str()
        if given[0] == "regex":
            try:
                regex = re.compile(value, re.IGNORECASE if ignore_case else 0)
            except re.error as exc:
                value_node.error(f"invalid regular expression: {exc}")
        else:
            value = _canonical_pattern(value_node, value, path_allow)
            if ignore_case:
                value = fold_case(value)
            if given[0] == "exact":
                exact = value
            elif given[0] == "prefix":
                prefix = value
            else:
                subtree = value.rstrip("/") + "/"
    elif ignore_case:
        node.get("ignore_case").error("ignore_case applies to the path: give a path too")
    return Match(
        hosts=frozenset(hosts),
        host_suffixes=tuple(suffixes),
        methods=frozenset(methods),
        path_exact=exact,
        path_prefix=prefix,
        path_subtree=subtree,
        path_regex=regex,
        ignore_case=ignore_case,
    )


_PATH_KINDS = ("exact", "prefix", "subtree", "regex")


def _canonical_pattern(node: Node, value: str, path_allow: PathProblem) -> str:
    """A path pattern as routes compare it: already canonical, or refused at its field.

    Routes match the canonical path (authz.paths), so a pattern in any other
    spelling, or holding a class the policy refuses in requests, could never match.
    """
    if not value.startswith("/"):
        node.error(f"a path starts with '/': {value!r}")
    canonical, problems = canonicalize(value)
    refused = problems & ~path_allow
    if refused:
        node.error(f"{value!r} holds {names(refused)}, which requests are refused for (paths.allow), so it would never match")
    if canonical != value:
        node.error(f"{value!r} is not a canonical path (routes match canonical paths): write {canonical!r}")
    return value


def _route(
    node: Node,
    lists: dict[str, CidrSet],
    quotas: dict[str, Quota | DistinctLimit],
    authenticators: dict[str, Authenticator],
    kinds: dict[str, MethodKind],
    global_ip: IpRules,
    path_allow: PathProblem,
    challengers: dict[str, Challenger],
    geo: GeoSection,
) -> Route:
    node.keys(
        allowed={"name", "match", "action", "ip", "geo", "auth", "quota", "tiers", "reputation", "on_store_error", "challenge"},
        required={"name"},
    )
    name = _name(node.get("name").str(), node.get("name"))
    action = node.get("action", "check").str(choices={"check", "allow", "deny"})
    route_ip = _ip_rules(node.get("ip", {}), lists)
    ip = IpRules(
        deny=global_ip.deny + route_ip.deny,
        allow=global_ip.allow + route_ip.allow,
        only=global_ip.only + route_ip.only,
    )
    countries = compile_route_geo(node.get("geo", None), geo.geo, geo.countries)

    methods: list[Authenticator] = []
    anonymous = False
    auth_node = node.get("auth", None)
    if action == "check":
        if auth_node.value is None:
            node.error("a route with action 'check' needs 'auth' (a list such as [anonymous] or [jwt:partners])")
        for item in auth_node.items():
            ref = item.str()
            kind, _, cfg = ref.partition(":")
            if kind not in kinds:
                item.error(f"unknown authentication method {kind!r} (known: {', '.join(sorted(kinds))})")
            if kind == "anonymous":
                if cfg:
                    item.error("anonymous takes no name")
                anonymous = True
                continue
            if ref not in authenticators:
                section = kinds[kind].section
                item.error(f"no {kind} configuration named {cfg!r} under {section!r}")
            methods.append(authenticators[ref])
        if not methods and not anonymous:
            auth_node.error("list at least one method")
    elif auth_node.value is not None:
        auth_node.error(f"a route with action {action!r} runs no checks; remove 'auth'")

    challenger = None
    if node.has("challenge"):
        cnode = node.get("challenge")
        cname = cnode.str()
        if action != "check":
            cnode.error(f"a route with action {action!r} runs no checks; remove 'challenge'")
        if cname not in challengers:
            cnode.error(f"no challenge named {cname!r} under 'challenges'")
        challenger = challengers[cname]

    route_quotas = _route_quotas(node.get("quota", []), quotas)
    tiers: dict[str, tuple[tuple[Quota | DistinctLimit, int | None], ...]] = {}
    for tier, tnode in node.get("tiers", {}).entries():
        if not _TIER.fullmatch(tier):
            Node(tnode.file, tnode.field, None, tnode.line).error(f"not a tier name: {tier!r} (letters, digits, '_', '.', '-')")
        tiers[tier] = _route_quotas(tnode, quotas)

    modes = dict(DEFAULT_ON_STORE_ERROR)
    ose = node.get("on_store_error", {})
    for kind, mode_node in ose.entries():
        if kind not in CHECK_KINDS:
            Node(ose.file, mode_node.field, None, mode_node.line).error(
                f"unknown check kind {kind!r} (expected one of: {', '.join(sorted(CHECK_KINDS))})"
            )
        modes[kind] = mode_node.str(choices=set(STORE_ERROR_MODES[kind]))

    return Route(
        name=name,
        match=_match(node.get("match", {}), path_allow),
        action=action,
        ip=ip,
        countries=countries,
        auth=tuple(methods),
        anonymous=anonymous,
        quotas=route_quotas,
        tiers=tiers,
        on_store_error=modes,
        challenge=challenger,
    )


__all__ = ["CompileContext", "ConfigError", "load_policy"]


def _route_quotas(node: Node, quotas: dict[str, Quota | DistinctLimit]) -> tuple[tuple[Quota | DistinctLimit, int | None], ...]:
    """A route's list of quotas: names, or {name, cost} to override the cost."""
    out: list[tuple[Quota | DistinctLimit, int | None]] = []
    seen: set[str] = set()
    for item in node.items():
        cost: int | None = None
        if isinstance(item.value, dict):
            item.keys(allowed={"name", "cost"}, required={"name"})
            qname = item.get("name").str()
            if item.has("cost"):
                cost = item.get("cost").int(min=0, max=10**9)
        else:
            qname = item.str()
        if qname not in quotas:
            item.error(f"no quota named {qname!r} in quotas")
        if qname in seen:
            item.error(f"quota {qname!r} listed twice")
        seen.add(qname)
        quota = quotas[qname]
        if cost is not None and isinstance(quota, Quota) and cost > quota.burst:
            item.get("cost").error(f"costs more than quota {qname!r} can ever hold (burst {quota.burst})")
        if cost is not None and isinstance(quota, DistinctLimit):
            item.get("cost").error("a distinct-count limit has no cost")
        out.append((quota, cost))
    return tuple(out)
