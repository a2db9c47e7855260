"""Stage 4 (plan) and 6 (judge) for quotas: token buckets and distinct-count limits.

A **bucket quota** allows ``limit`` requests per ``window`` with bursts up to
``burst``, refilling continuously (GCRA, one stored number per bucket). A
request costs ``cost`` tokens (the quota's, or the route's override). Its key
is a template over request facts (``by``): the client (authenticated subject,
else address), the address, its subnet (/24 for IPv4, /64 for IPv6), the
subject, the key id, a header, a JWT claim, the route, everyone (``global``),
or a combination (``by: [subject, route]``). A missing fact (no subject, no
such header) falls back to the client address, so it cannot be used to share
one bucket among strangers.

``mode: shadow`` counts and reports (signal, ``x-authz-shadow`` upstream)
but never refuses. A ``cooldown`` holds a client that keeps exhausting the
quota out for a period that grows with repeated offences, then releases it.

A **distinct-count limit** (``distinct: ip``, ``per: subject``) allows at most
``limit`` distinct values of one fact per value of another within ``window``
(a HyperLogLog in Redis): more than N addresses per token, more than N
subjects per /24. Exceeding denies (``quota.distinct_exceeded``, 403), or with
``action: signal`` only records the signal (the reputation stage reads it).

The client sees the IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers)
of the most constrained bucket quota, ``RateLimit-Policy: "name";q=100;w=60``
and ``RateLimit: "name";r=42;t=17``; a refused request gets 429 with
``Retry-After`` and the quota's name in the body.

Policy section, by example::

    quotas:
      per-client: {limit: 100, window: 1m, burst: 20, by: client}
      per-route:  {limit: 10, window: 1s, by: [subject, route], cost: 1}
      writes:     {limit: 1000, window: 1h, by: key_id, mode: shadow}
      logins:     {limit: 5, window: 10m, by: subnet,
                   cooldown: {after: 3, base: 1m, factor: 2, max: 1h, memory: 1d}}
      shared-tokens: {distinct: ip, per: subject, limit: 5, window: 1h, action: deny}
    routes:
      - quota: [per-client, {name: per-route, cost: 5}]
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from authz.config.cidr import subnet_of
from authz.decision import QUOTA_EXHAUSTED, Outcome, reason
from authz.stages.context import Ctx
from authz.store.base import Distinct, Op, Result, Tokens
from authz.store.ops import Cooldown, CountDistinct, TakeTokens

if TYPE_CHECKING:
    from authz.config.context import CompileContext
    from authz.config.source import Node
    from authz.keys import KeyRing

QUOTA_COOLDOWN = reason("quota.cooldown", Outcome.LIMIT, 429, "The client kept exhausting a quota and is held out for a while (its cooldown); Retry-After says how long.")
QUOTA_DISTINCT_EXCEEDED = reason("quota.distinct_exceeded", Outcome.DENY, 403, "Too many distinct values of one fact for another within the window (addresses per token, subjects per subnet...).")

#: the facts a key can be built from
FACTS = ("client", "ip", "subnet", "subject", "key_id", "route", "global")
#: facts with a value of their own (header:<name>, claim:<name>)
PARAM_FACTS = ("header", "claim")
#: values longer than this are hashed into the key (headers and claims come from clients)
MAX_PART = 64
_HEADER = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_CLAIM = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@lru_cache(maxsize=65536)
def _bounded(value: str) -> str:
    if len(value) <= MAX_PART and "{" not in value and "}" not in value:
        return value
    return "h:" + hashlib.sha256(value.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class KeyTemplate:
    """How a key is built from request facts: ``("subject", "route")``, ``("header:x-tenant",)``."""

    facts: tuple[str, ...]

    def render(self, ctx: Ctx) -> tuple[str, str]:
        """(the key, its owner: what its state belongs to, the Redis hash tag)."""
        parts: list[str] = []
        owner = ""
        ident = ctx.identity
        fallback = f"ip:{ident.client_ip}"
        for fact in self.facts:
            if fact == "client":
                part = ident.client_key
            elif fact == "ip":
                part = fallback
            elif fact == "subnet":
                part = f"net:{subnet_of(ident.client_ip) or ident.client_ip}"
            elif fact == "subject":
                part = f"sub:{_bounded(ident.subject)}" if ident.subject else fallback
            elif fact == "key_id":
                part = f"kid:{_bounded(ident.key_id)}" if ident.key_id else fallback
            elif fact == "route":
                part = f"route:{ctx.route_name}"
                parts.append(part)
                continue  # a route is never what state belongs to
            elif fact == "global":
                part = "*"
                parts.append(part)
                continue
            elif fact.startswith("header:"):
                value = ctx.req.headers.get(fact[7:], "")
                part = f"h:{fact[7:]}={_bounded(value)}" if value else fallback
            else:  # claim:<name>
                value = _claim(ident.claims, fact[6:])
                part = f"c:{fact[6:]}={_bounded(value)}" if value else fallback
            parts.append(part)
            owner = owner or part
        return "|".join(parts), owner


#: the key part of each fact that names one identity (``KeyTemplate.render``)
_FACT_PREFIXES = {"ip": "ip", "subnet": "net", "subject": "sub", "key_id": "kid"}


def fact_part(fact: str, value: str) -> str:
    """The key part ``KeyTemplate.render`` makes of one identity fact's value (the admin API's client state).

    :param fact: ``ip`` or ``subnet`` (value: the address or network), ``subject`` or ``key_id``;
        ``client`` is ``subject`` for a subject and ``ip`` for an address, so pass those
    """
    prefix = _FACT_PREFIXES[fact]
    return f"{prefix}:{value}" if prefix in ("ip", "net") else f"{prefix}:{_bounded(value)}"


def _claim(claims: dict[str, Any] | None, name: str) -> str:
    if not claims:
        return ""
    value = claims.get(name)
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


@dataclass(frozen=True, slots=True, eq=False)
class Quota:
    """A compiled bucket quota and the judge of its bucket's result."""

    name: str
    limit: int
    window_ms: int
    burst: int
    by: KeyTemplate = KeyTemplate(("client",))
    cost: int = 1
    shadow: bool = False
    cooldown: Cooldown | None = None
    #: the share of the limit each process enforces on its own when the store is down (on_store_error: local)
    local_share: float = 1.0

    @property
    def kind(self) -> str:
        return "quota"

    @property
    def interval_ms(self) -> float:
        return self.window_ms / self.limit

    def plan(self, ctx: Ctx, cost: int | None = None) -> None:
        key, owner = self.by.render(ctx)
        ctx.plan(
            TakeTokens(
                f"{self.name}:{key}", self.interval_ms, self.burst, self.cost if cost is None else cost,
                enforce=not self.shadow, owner=owner, cooldown=self.cooldown,
            ),
            self,
        )  # fmt: skip

    def local_op(self, op: Op) -> TakeTokens:
        """The same take against a process-local bucket holding this process's share of the quota."""
        assert isinstance(op, TakeTokens)
        share = self.local_share
        return replace(op, capacity=max(1, int(self.burst * share)), interval_ms=self.interval_ms / share, cooldown=None)

    def judge(self, result: Result, op: Op, ctx: Ctx) -> None:
        assert isinstance(result, Tokens)
        window_s = max(self.window_ms // 1000, 1)
        reset_s = (result.reset_ms + 999) // 1000
        if self.shadow:
            if not result.allowed:
                ctx.signals.append(("quota." + self.name, "shadow_exhausted"))
                ctx.upstream_headers.append(("x-authz-shadow", self.name))
            return
        # Report the most constrained quota: the first refusal, else the lowest remaining.
        if not result.allowed:
            retry_s = max((result.retry_after_ms + 999) // 1000, 1)
            held = result.cooldown_ms > 0
            if ctx.reason is None:
                ctx.refuse(QUOTA_COOLDOWN if held else QUOTA_EXHAUSTED)
                ctx.deny_headers.append(("retry-after", str(retry_s)))
                ctx.body["quota"] = self.name
                _set_ratelimit(ctx, self.name, self.burst, window_s, 0, retry_s)
            ctx.signals.append(("quota." + self.name, "cooldown" if held else "exhausted"))
            if result.strikes:
                ctx.signals.append(("quota." + self.name + ".strikes", str(result.strikes)))
            return
        _set_ratelimit(ctx, self.name, self.burst, window_s, result.remaining, reset_s)


@dataclass(frozen=True, slots=True, eq=False)
class DistinctLimit:
    """A compiled distinct-count limit: at most ``limit`` distinct ``of`` per ``per`` in ``window_ms``."""

    name: str
    of: KeyTemplate
    per: KeyTemplate
    limit: int
    window_ms: int
    deny: bool = True

    @property
    def kind(self) -> str:
        return "quota"

    def plan(self, ctx: Ctx, cost: int | None = None) -> None:
        member, _ = self.of.render(ctx)
        key, owner = self.per.render(ctx)
        ctx.plan(CountDistinct(f"{self.name}:{key}", member, self.limit, self.window_ms, enforce=self.deny, owner=owner), self)

    def judge(self, result: Result, op: Op, ctx: Ctx) -> None:
        assert isinstance(result, Distinct)
        if not result.exceeded:
            return
        ctx.signals.append(("distinct." + self.name, str(result.count)))
        # evidence against the request's identities, recorded with the outcome (reputation)
        ctx.late_evidence.append(("distinct." + self.name, 1.0))
        if self.deny and ctx.reason is None:
            ctx.refuse(QUOTA_DISTINCT_EXCEEDED)
            ctx.body["quota"] = self.name


def _set_ratelimit(ctx: Ctx, name: str, quota: int, window_s: int, remaining: int, reset_s: int) -> None:
    headers = ctx.client_headers
    for i, (hname, value) in enumerate(headers):
        if hname == "ratelimit":
            if ctx.reason is None and remaining >= _remaining_of(value):
                return
            headers[i] = ("ratelimit", f'"{name}";r={remaining};t={reset_s}')
            headers[i + 1] = ("ratelimit-policy", f'"{name}";q={quota};w={window_s}')
            return
    headers.append(("ratelimit", f'"{name}";r={remaining};t={reset_s}'))
    headers.append(("ratelimit-policy", f'"{name}";q={quota};w={window_s}'))


def _remaining_of(value: str) -> int:
    start = value.find(";r=") + 3
    end = value.find(";", start)
    return int(value[start:end])


# -- configuration ---------------------------------------------------------------------


def compile_quotas(node: Node, cc: CompileContext[KeyRing]) -> dict[str, Quota | DistinctLimit]:
    """The ``quotas`` section; every error names file, line and field."""
    out: dict[str, Quota | DistinctLimit] = {}
    for name, q in node.entries():
        out[name] = _distinct(name, q) if q.has("distinct") else _bucket(name, q)
    return out


def _bucket(name: str, q: Node) -> Quota:
    q.keys(
        allowed={"limit", "window", "burst", "by", "cost", "mode", "cooldown", "local_share"},
        required={"limit", "window"},
    )
    limit = q.get("limit").int(min=1, max=10**9)
    window_ms = q.get("window").duration_ms(min_ms=1)
    burst = q.get("burst", limit).int(min=1, max=10**9)
    cost = q.get("cost", 1).int(min=0, max=burst)
    shadow = q.get("mode", "enforce").str(choices={"enforce", "shadow"}) == "shadow"
    share = q.get("local_share", 1.0).number(min=0.0001, max=1.0)
    return Quota(
        name=name, limit=limit, window_ms=window_ms, burst=burst, by=_template(q.get("by", "client")),
        cost=cost, shadow=shadow, cooldown=_cooldown(q.get("cooldown")) if q.has("cooldown") else None,
        local_share=share,
    )  # fmt: skip


def _distinct(name: str, q: Node) -> DistinctLimit:
    q.keys(allowed={"distinct", "per", "limit", "window", "action"}, required={"distinct", "per", "limit", "window"})
    return DistinctLimit(
        name=name,
        of=_template(q.get("distinct")),
        per=_template(q.get("per")),
        limit=q.get("limit").int(min=1, max=10**6),
        window_ms=q.get("window").duration_ms(min_ms=1000),
        deny=q.get("action", "deny").str(choices={"deny", "signal"}) == "deny",
    )


def _template(node: Node) -> KeyTemplate:
    items = [node] if isinstance(node.value, str) else node.items()
    if not items:
        node.error("name at least one fact")
    facts: list[str] = []
    for item in items:
        fact = item.str()
        kind, sep, param = fact.partition(":")
        if sep and kind in PARAM_FACTS:
            pattern = _HEADER if kind == "header" else _CLAIM
            if not pattern.fullmatch(param):
                item.error(f"{kind}:<name> needs a {'lower-case header' if kind == 'header' else 'claim'} name; got {param!r}")
        elif fact not in FACTS:
            item.error(f"must be one of {', '.join(FACTS)}, header:<name> or claim:<name>; got {fact!r}")
        if fact in facts:
            item.error(f"{fact!r} listed twice")
        facts.append(fact)
    if "global" in facts and len(facts) > 1:
        node.error("global is one bucket for everyone; it cannot be combined with other facts")
    return KeyTemplate(tuple(facts))


def _cooldown(node: Node) -> Cooldown:
    node.keys(allowed={"after", "base", "factor", "max", "memory"}, required={"base"})
    base = node.get("base").duration_ms(min_ms=1)
    max_ms = node.get("max", f"{base * 16}ms").duration_ms(min_ms=base)
    memory = node.get("memory", f"{max(max_ms, 3_600_000)}ms").duration_ms()
    if memory < max_ms:
        node.get("memory").error("must be at least max: offences are remembered for as long as a hold can last")
    return Cooldown(
        after=node.get("after", 2).int(min=1, max=1000),
        base_ms=base,
        factor=node.get("factor", 2.0).number(min=1.0, max=100.0),
        max_ms=max_ms,
        memory_ms=memory,
    )


__all__ = ["DistinctLimit", "KeyTemplate", "Quota", "compile_quotas", "fact_part"]
