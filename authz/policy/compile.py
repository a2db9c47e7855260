"""Validate a policy file and compile it into a ``Policy``.

Every error is a ``ConfigError`` naming the file, the line and the field;
unknown keys are refused. Nothing here runs per request: what can be decided
at load (regexes, CIDR tables, quota intervals, method objects) is.

The schema, by example (examples/policy.yaml is the annotated version)::

    version: 1
    keys_file: keys.yaml                    # verification keys and HMAC secrets (authz.keys)
    trusted_proxies: [10.0.0.0/8]
    limits: {max_headers: 128, max_header_bytes: 65536, max_target_bytes: 8192}
    ip_lists:
      blocked: {file: lists/blocked.txt}
      office: {cidrs: ["203.0.113.0/24 office"]}
    ip: {deny: [blocked]}
    quotas:
      per-client: {limit: 100, window: 1m, burst: 20, by: client}
    routes:
      - name: api
        match: {hosts: [api.example.com], methods: [GET], path: {prefix: /v1/}}
        auth: [anonymous]
        quota: [per-client]
        on_store_error: {quota: open, replay: closed}
"""

from __future__ import annotations

import os
import re

from authz.config import source
from authz.config.cidr import CidrSet, load_list_file, parse_entry
from authz.config.context import CompileContext
from authz.config.source import Node
from authz.errors import ConfigError
from authz.keys import EMPTY_KEYRING, KeyRing, load_keys
from authz.policy.model import CHECK_KINDS, DEFAULT_FAIL_OPEN, IpRules, Limits, Policy, Route
from authz.stages.authenticate import Authenticator, MethodKind, registered_kinds
from authz.stages.quota import BY_CHOICES, Quota
from authz.stages.respond import UPSTREAM_HEADERS
from authz.stages.route import Match

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d+)?$|^\[[0-9a-f:.]+\](:\d+)?$")


def load_policy(path: str, text: str | None = None) -> Policy:
    """Read, validate and compile a policy file.

    :raises ConfigError: naming the file, line and field of the first problem
    """
    root = source.load(path, text)
    return compile_policy(root, CompileContext(file=path, base_dir=os.path.dirname(os.path.abspath(path)), keyring=EMPTY_KEYRING))


def compile_policy(root: Node, cc: CompileContext[KeyRing]) -> Policy:
    kinds = registered_kinds()
    sections = {k.section: k for k in kinds.values() if k.section}
    root.keys(
        allowed={"version", "keys_file", "trusted_proxies", "limits", "ip_lists", "ip", "quotas", "routes", *sections},
        required={"version", "routes"},
    )
    version = root.get("version")
    if version.int() != 1:
        version.error(f"unsupported policy version {version.value} (this authz reads version 1)")
    if root.has("keys_file"):
        node = root.get("keys_file")
        cc.keyring = load_keys(_readable(node, cc))

    lists = _ip_lists(root.get("ip_lists", {}), cc)
    trusted = _trusted(root.get("trusted_proxies", []))
    limits = _limits(root.get("limits", {}))
    global_ip = _ip_rules(root.get("ip", {}), lists)
    quotas = _quotas(root.get("quotas", {}))

    authenticators: dict[str, Authenticator] = {}
    for section, kind in sections.items():
        node = root.get(section, {})
        for name, cfg in node.entries():
            _name(name, node.get(name))
            authenticators[f"{kind.kind}:{name}"] = kind.compile(name, cfg, cc)

    routes: list[Route] = []
    seen: dict[str, int] = {}
    for rnode in root.get("routes").items():
        route = _route(rnode, lists, quotas, authenticators, kinds, global_ip)
        if route.name in seen:
            rnode.get("name").error(f"route name {route.name!r} already used on line {seen[route.name]}")
        seen[route.name] = rnode.line
        routes.append(route)
    if not routes:
        root.get("routes").error("a policy needs at least one route")

    upstream_headers = UPSTREAM_HEADERS.union(*(a.upstream_header_names() for a in authenticators.values()))
    return Policy(
        file=cc.file,
        routes=tuple(routes),
        trusted_proxies=trusted,
        ip=global_ip,
        limits=limits,
        ip_lists=lists,
        quotas=quotas,
        authenticators=authenticators,
        keyring=cc.keyring,
        upstream_headers=upstream_headers,
    )


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


def _ip_lists(node: Node, cc: CompileContext[KeyRing]) -> dict[str, CidrSet]:
    out: dict[str, CidrSet] = {}
    for name, lnode in node.entries():
        _name(name, lnode)
        lnode.keys(allowed={"file", "cidrs"})
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


def _limits(node: Node) -> Limits:
    node.keys(allowed={"max_headers", "max_header_bytes", "max_target_bytes"})
    d = Limits()
    return Limits(
        max_headers=node.get("max_headers", d.max_headers).int(min=1, max=10_000),
        max_header_bytes=node.get("max_header_bytes", d.max_header_bytes).int(min=256, max=1 << 20),
        max_target_bytes=node.get("max_target_bytes", d.max_target_bytes).int(min=16, max=1 << 20),
    )


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


def _quotas(node: Node) -> dict[str, Quota]:
    out: dict[str, Quota] = {}
    for name, q in node.entries():
        _name(name, q)
        q.keys(allowed={"limit", "window", "burst", "by"}, required={"limit", "window"})
        limit = q.get("limit").int(min=1, max=10**9)
        window_ms = q.get("window").duration_ms(min_ms=1)
        burst = q.get("burst", limit).int(min=1, max=10**9)
        by_node = q.get("by", "client")
        by = by_node.str()
        if by.startswith("header:"):
            if not re.fullmatch(r"header:[a-z0-9!#$%&'*+.^_`|~-]+", by):
                by_node.error("header:<name> needs a lower-case header name")
        elif by not in BY_CHOICES:
            by_node.error(f"must be one of {', '.join(sorted(BY_CHOICES))} or header:<name>; got {by!r}")
        out[name] = Quota(name=name, limit=limit, window_ms=window_ms, burst=burst, by=by)
    return out


def _match(node: Node) -> Match:
    node.keys(allowed={"hosts", "methods", "path"})
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
    exact = prefix = None
    regex = None
    if node.has("path"):
        pnode = node.get("path")
        pnode.keys(allowed={"exact", "prefix", "regex"})
        given = [k for k in ("exact", "prefix", "regex") if pnode.has(k)]
        if len(given) != 1:
            pnode.error("give exactly one of exact, prefix, regex")
        value_node = pnode.get(given[0])
        value = value_node.str()
        if given[0] != "regex" and not value.startswith("/"):
            value_node.error(f"a path starts with '/': {value!r}")
        if given[0] == "exact":
            exact = value
        elif given[0] == "prefix":
            prefix = value
        else:
            try:
                regex = re.compile(value)
            except re.error as exc:
                value_node.error(f"invalid regular expression: {exc}")
    return Match(
        hosts=frozenset(hosts),
        host_suffixes=tuple(suffixes),
        methods=frozenset(methods),
        path_exact=exact,
        path_prefix=prefix,
        path_regex=regex,
    )


def _route(
    node: Node,
    lists: dict[str, CidrSet],
    quotas: dict[str, Quota],
    authenticators: dict[str, Authenticator],
    kinds: dict[str, MethodKind],
    global_ip: IpRules,
) -> Route:
    node.keys(
        allowed={"name", "match", "action", "ip", "auth", "quota", "on_store_error"},
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

    route_quotas: list[Quota] = []
    for item in node.get("quota", []).items():
        qname = item.str()
        if qname not in quotas:
            item.error(f"no quota named {qname!r} in quotas")
        route_quotas.append(quotas[qname])

    fail_open = set(DEFAULT_FAIL_OPEN)
    ose = node.get("on_store_error", {})
    for kind, mode_node in ose.entries():
        if kind not in CHECK_KINDS:
            Node(ose.file, mode_node.field, None, mode_node.line).error(
                f"unknown check kind {kind!r} (expected one of: {', '.join(sorted(CHECK_KINDS))})"
            )
        if mode_node.str(choices={"open", "closed"}) == "open":
            fail_open.add(kind)
        else:
            fail_open.discard(kind)

    return Route(
        name=name,
        match=_match(node.get("match", {})),
        action=action,
        ip=ip,
        auth=tuple(methods),
        anonymous=anonymous,
        quotas=tuple(route_quotas),
        fail_open=frozenset(fail_open),
    )


__all__ = ["CompileContext", "ConfigError", "load_policy"]
