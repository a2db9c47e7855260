"""Stage 4/6 for reputation: a behavioural score per identity, and what a route does about it.

Bots that rotate addresses, pace themselves and send valid-looking requests
are caught by how *sequences* of requests behave. Every request adds its
evidence (``ctx.evidence``: automation user agents, probes, list labels...,
weighted here) to the decaying state of each of its identities (address,
subnet, subject, key id, session, device) in the request's single store
call; the store also infers what needs history (a metronome cadence, bursts,
sequential ids, the routes reached). The score of an identity is

    score = 100 * evidence / (evidence + scale)

over its decayed, weighted evidence (``scale``: the evidence that makes a
score of 50). A request's score is the highest of its identities' scores,
each weighted by how much its kind says about one sender (a subnet is shared
by many). What a decision reveals only once it is made (an authentication
failure, a replay, a quota refusal, later the backend's status) is recorded
after the decision, off the critical path (``outcome_ops``).

A route's ``reputation`` says what to do at which score: tag (score and top
signals to the upstream), throttle (a stricter quota), tarpit (hold the answer,
bounded), challenge (proof of work), a decoy answer, deny. In monitor mode
(global or per route) the would-be action is only recorded. An agent that
proved who it is (``tier: verified-bot``) is never scored as bad automation.
Every decision with a score records its top contributing signals: the decision
log, the admin API and, when configured, an upstream header show them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from authz.config.cidr import subnet_of
from authz.decision import Outcome, Reason, reason
from authz.stages.context import Ctx
from authz.store.base import Distinct, Op, Result, Tokens
from authz.store.ops import CountDistinct, Derived, Reputation, Standing, TakeTokens

if TYPE_CHECKING:
    from authz.config.context import CompileContext
    from authz.config.source import Node
    from authz.keys import KeyRing

REPUTATION_DENIED = reason("reputation.denied", Outcome.DENY, 403, "The client's behavioural score is above the route's deny threshold; the decision's signals say why.")
REPUTATION_THROTTLED = reason("reputation.throttled", Outcome.LIMIT, 429, "The client's score put it under the route's stricter quota, which is used up; Retry-After says when to retry.")
REPUTATION_DECOY = reason("reputation.decoy", Outcome.DENY, 404, "The client's score is above the route's decoy threshold: it got the configured decoy answer instead of the API.")
REPUTATION_CHALLENGED = reason("reputation.challenged", Outcome.CHALLENGE, 429, "The client's score is above the route's challenge threshold: it must solve the proof of work in the answer's headers.")


@dataclass(frozen=True, slots=True)
class Signal:
    """A kind of evidence: its default weight, and whether it counts only for anonymous requests.

    ``anonymous_only`` signals describe what any program looks like (a library's
    user agent, a steady cadence): an authenticated integration is expected to
    look like that, so they count only when no credential was verified.
    """

    weight: float
    description: str
    anonymous_only: bool = False


#: every signal the reputation stage knows, by name (a prefix ends with "."), with its default weight
SIGNALS: dict[str, Signal] = {
    # recorded after the decision: what the outcome revealed
    "auth.failure": Signal(3.0, "a credential (token, signature, key) was presented and refused"),
    "login.failure": Signal(4.0, "a sensitive route (a login) refused the client, or its backend answered 401/403"),
    "replay": Signal(6.0, "a single-use credential was presented again"),
    "quota.exhausted": Signal(1.0, "a quota refused the request"),
    "quota.cooldown": Signal(2.0, "the client kept exhausting a quota and is held out"),
    "distinct.": Signal(3.0, "a distinct-count limit in signal mode was exceeded (addresses per token, subjects per address)"),
    "journey": Signal(3.0, "a route was reached without any of its expected predecessors"),
    "status.404": Signal(0.5, "the backend answered 404 (path enumeration by an access log)"),
    "status.4xx": Signal(0.3, "the backend answered another 4xx"),
    # inferred by the store from the identity's history
    "cadence": Signal(1.0, "inter-arrival times too regular for a person (coefficient of variation below the threshold)", anonymous_only=True),
    "burst": Signal(1.0, "more requests within seconds than a person sends"),
    "sequence": Signal(2.0, "consecutive numeric ids requested one after another (/items/41, /items/42..., or ?page=41, ?page=42...)", anonymous_only=True),
    "method.probing": Signal(0.5, "a method browsers do not send on their own (HEAD, TRACE, PROPFIND...): link checkers and scanners", anonymous_only=True),
    # found in the request itself (other stages add them to ctx.evidence)
    "ua.automation": Signal(0.5, "a library or headless-browser user agent", anonymous_only=True),
    "ua.scanner": Signal(5.0, "the user agent names an attack tool (sqlmap, nikto, nuclei...)"),
    "headers.missing": Signal(0.5, "ordinary browser headers (accept, accept-language, user-agent) are missing", anonymous_only=True),
    "ua.fingerprint_mismatch": Signal(4.0, "the user agent claims a browser the TLS fingerprint contradicts"),
    "probe.": Signal(5.0, "injection or traversal patterns, or a scanner's favourite path"),
    "list.": Signal(1.0, "the address is on a labelled list (datacenter, Tor exit, abuse feed); capped by the list's strength"),
    "network.hosting": Signal(0.5, "the address belongs to a hosting provider's network"),
    "ipv6.rotation": Signal(3.0, "more distinct addresses of one IPv6 /64 within minutes than one household uses (a sender rotating its addresses)"),
    "geo.travel": Signal(3.0, "the same token or session appeared from countries too far apart too soon"),
    "agent.": Signal(4.0, "an agent signature that did not verify (forged, expired, replayed)"),
    "ua.impersonation": Signal(6.0, "the user agent names a crawler of the claimed_bots list, and the request is neither a verified agent nor a listed bot"),
}

#: identities that many senders may share: volume there is not evidence against one of them
_SHARED_KINDS = frozenset({"ip", "subnet", "subnet6"})
#: the identities that can be scored, and how much one kind says about one sender
IDENTITY_KINDS: dict[str, float] = {"ip": 1.0, "subnet": 0.6, "subject": 1.0, "key_id": 1.0, "session": 1.0, "device": 1.0}
#: the weight of an IPv6 /64 (the "subnet" identity of an IPv6 address): one customer's network
SUBNET6_WEIGHT = 0.9
ACTIONS = ("tag", "throttle", "tarpit", "challenge", "decoy", "deny")
#: the header a challenged client repeats its request with (authz.challenge.SOLUTION_HEADER)
_SOLUTION = "authz-solution"
_NUMBER = re.compile(r"/(\d{1,15})(?:/|$|\.)")
#: a numeric query parameter (?id=41, &page=42): enumeration by parameter, when the path has no number
_QUERY_NUMBER = re.compile(r"(?:^|&)[A-Za-z_][A-Za-z0-9_.-]{0,31}=(\d{1,15})(?:&|$)")
#: evidence about what an address *is* (on a labelled list, in a hosting network), not about what
#: it did: it adds its weight to the request's score once, never accumulates with the address's
#: requests, so a list alone never condemns a busy address (a carrier NAT on an abuse feed)
_STATIC = ("list.", "network.hosting")
#: methods a browser does not send on its own; scanners and link checkers do
_PROBING_METHODS = frozenset({"HEAD", "TRACE", "TRACK", "PROPFIND", "CONNECT"})
_MAX_PART = 96


def signals_table() -> str:
    """Every signal as a Markdown table (``authz signals``; docs/reputation.md holds its output)."""
    rows = ["| signal | default weight | counts for | meaning |", "|---|---|---|---|"]
    for name, spec in SIGNALS.items():
        shown = f"`{name}*`" if name.endswith(".") else f"`{name}`"
        who = "anonymous requests" if spec.anonymous_only else "every request"
        rows.append(f"| {shown} | {spec.weight:g} | {who} | {spec.description} |")
    return "\n".join(rows) + "\n"


def signal_for(name: str) -> Signal | None:
    """The signal an evidence name belongs to: its exact entry, else its family (``probe.``)."""
    spec = SIGNALS.get(name)
    if spec is not None:
        return spec
    family = name[: name.find(".") + 1] if "." in name else ""
    return SIGNALS.get(family)


def _part(value: str) -> str:
    if len(value) <= _MAX_PART and "{" not in value and "}" not in value:
        return value
    return "h:" + hashlib.sha256(value.encode()).hexdigest()[:24]


#: the prefix of each identity kind's state key (``ReputationStage.identities_of``)
KEY_PREFIXES = {"ip": "ip", "subnet": "net", "subnet6": "net", "subject": "sub", "key_id": "kid", "session": "sess", "device": "dev"}


def identity_key(kind: str, value: str, method: str = "") -> str:
    """The state key of one identity, as ``identities_of`` forms it (the admin API's client state).

    :param kind: a key of ``KEY_PREFIXES``
    :param value: the address, the network (``203.0.113.0/24``), the subject, the key id, the session or device id
    :param method: the authentication method that proved a subject or a key id (``jwt:okta``)
    """
    prefix = KEY_PREFIXES[kind]
    if kind in ("ip", "subnet", "subnet6"):
        return f"{prefix}:{value}"
    if kind in ("subject", "key_id"):
        return f"{prefix}:{method}:{_part(value)}"
    return f"{prefix}:{_part(value)}"


class Bucket(Protocol):
    """What a throttle needs of a bucket quota (authz.stages.quota.Quota): stages meet only through types like this."""

    name: str
    interval_ms: int
    burst: int
    cost: int

    @property
    def by(self) -> Any: ...


class Challenger(Protocol):
    """What the challenge action needs of a proof-of-work challenger (authz.stages.challenge.Challenger)."""

    def difficulty_for(self, score: float) -> int: ...

    def check(self, ctx: Ctx, binding: str, route: str, *, min_difficulty: int = 0) -> Any: ...

    def refuse(self, ctx: Ctx, reason: Reason, binding: str, route: str, difficulty: int, *, status: int = 0) -> None: ...


@dataclass(frozen=True, slots=True)
class Action:
    """Do ``do`` at scores of ``at`` and above."""

    at: float
    do: str
    quota: Bucket | None = None
    delay_ms: int = 0
    decoy: Decoy | None = None
    challenger: Challenger | None = None


@dataclass(frozen=True, slots=True)
class Decoy:
    """A configured answer that wastes a scraper's effort without telling it it was caught."""

    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class RouteReputation:
    """A route's reputation rules, compiled."""

    actions: tuple[Action, ...] = ()
    monitor: bool = False
    #: the route bits this route expects an identity to have reached before (journeys)
    after: int = 0
    after_names: tuple[str, ...] = ()
    #: this route's own bit (0: not tracked)
    bit: int = 0
    #: a login-like route: its refusals count as login failures of the address and subnet
    sensitive: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class ReputationStage:
    """The global ``reputation`` section, compiled: how evidence is weighed and kept."""

    half_life_ms: int = 600_000
    ttl_ms: int = 2_400_000
    scale: float = 10.0
    identities: tuple[str, ...] = ("ip", "subnet", "subject", "key_id", "session", "device")
    kind_weights: Mapping[str, float] = field(default_factory=lambda: {**IDENTITY_KINDS, "subnet6": SUBNET6_WEIGHT})
    weights: Mapping[str, float] = field(default_factory=dict)
    derived: Derived = Derived()
    monitor: bool = False
    #: upstream headers: the score always (x-authz-score); the top signals on "tag", or on every
    #: request with a score above 0 when ``signals_header`` is set (x-authz-signals)
    score_header: bool = True
    signals_header: bool = False
    max_tarpit_ms: int = 200
    top: int = 3
    #: user-agent words of crawlers that prove who they are (Web Bot Auth, listed addresses):
    #: a request claiming one without proof is ua.impersonation (lower case, matched as words)
    claimed_bots: re.Pattern[str] | None = None
    #: past this many (decayed) requests per half-life, an identity's evidence is scaled down by
    #: volume / requests: what counts for a busy identity is its evidence per request
    volume: float = 50.0
    #: geo.travel: more than ``travel_countries`` countries for one token or session within a window
    travel_window_ms: int = 3_600_000
    travel_countries: int = 1
    #: ipv6.rotation: more than ``rotation_addresses`` addresses of one /64 within ``rotation_window_ms``
    rotation_window_ms: int = 600_000
    rotation_addresses: int = 16

    @property
    def kind(self) -> str:
        return "reputation"

    # -- weights -----------------------------------------------------------------

    def weight(self, name: str, anonymous: bool) -> float:
        """The weight of one unit of ``name`` evidence for this request (0: it does not count)."""
        spec = signal_for(name)
        if spec is not None and spec.anonymous_only and not anonymous:
            return 0.0
        override = self.weights.get(name)
        if override is None and "." in name:
            override = self.weights.get(name[: name.find(".") + 1])
        if override is not None:
            return override
        return spec.weight if spec is not None else 1.0

    def _derived(self, anonymous: bool, kind: str) -> Derived:
        """What the store infers for one identity of this request.

        A steady cadence and a run of consecutive ids count only for anonymous
        requests (an integration is expected to be regular, and to page through
        a collection). A burst counts only for an anonymous session
        or device: an address or a network may be many people (a carrier NAT,
        an office), whose volume is the quotas' business, not evidence against
        any of them; an authenticated power user is expected to be busy.
        """
        d = self.derived
        burst = d.burst_weight if anonymous and kind not in _SHARED_KINDS else 0.0
        if anonymous and burst == d.burst_weight:
            return d
        cadence, sequence = (d.cadence_weight, d.sequence_weight) if anonymous else (0.0, 0.0)
        return Derived(
            d.alpha, d.cadence_min, d.cadence_cv, cadence, d.burst_half_life_ms, d.burst_rate, burst,
            d.sequence_min, sequence,
        )  # fmt: skip

    # -- identities ------------------------------------------------------------------

    def identities_of(self, ctx: Ctx) -> list[tuple[str, str]]:
        """(kind, key) of each identity of this request the policy scores."""
        ident = ctx.identity
        out: list[tuple[str, str]] = []
        for kind in self.identities:
            if kind == "ip" and ident.client_ip:
                out.append((kind, f"ip:{ident.client_ip}"))
            elif kind == "subnet" and ident.client_ip:
                net = subnet_of(ident.client_ip)
                if net:
                    # an IPv6 /64 is one customer's; an IPv4 /24 is many people's
                    out.append(("subnet6" if ":" in net else kind, f"net:{net}"))
            elif kind == "subject" and ident.subject:
                out.append((kind, f"sub:{ident.method}:{_part(ident.subject)}"))
            elif kind == "key_id" and ident.key_id and not ident.method.startswith("jwt:"):
                # a signing key names its client (a signature's, an API key's); a JWT's key is
                # its issuer's, shared by every user: the subject is the token's identity
                out.append((kind, f"kid:{ident.method}:{_part(ident.key_id)}"))
            elif kind == "session" and ident.session:
                out.append((kind, f"sess:{_part(ident.session)}"))
            elif kind == "device" and ident.device:
                out.append((kind, f"dev:{_part(ident.device)}"))
        return out

    # -- plan -------------------------------------------------------------------------

    def plan(self, ctx: Ctx, route: RouteReputation) -> None:
        """Add this request's reputation operations (and a throttle's take) to the batch."""
        if ctx.identity.tier == "verified-bot":
            ctx.signals.append(("reputation", "verified-bot: not scored"))
            return
        anonymous = _anonymous(ctx)
        claimed = self.claimed_bots
        if claimed is not None and ctx.identity.tier != "listed-bot":
            m = claimed.search(ctx.req.headers.get("user-agent", ""))
            if m is not None:
                ctx.evidence.append(("ua.impersonation", 1.0))
                ctx.signals.append(("reputation.claimed_bot", m.group(0).lower()))
        evidence = []
        static = []
        for name, strength in ctx.evidence:
            w = self.weight(name, anonymous)
            if w > 0 and strength > 0:
                if name.startswith(_STATIC):
                    static.append((name, round(min(strength, 1.0) * w, 6)))
                else:
                    evidence.append((name, round(min(strength, 1.0) * w, 6)))
        if ctx.req.method in _PROBING_METHODS:
            w = self.weight("method.probing", anonymous)
            if w > 0:
                evidence.append(("method.probing", w))
        number = -1
        m = _NUMBER.search(ctx.req.route_path)
        if m is None and ctx.req.query:
            m = _QUERY_NUMBER.search(ctx.req.query[:512])
        if m is not None:
            number = int(m.group(1))
        identities = self.identities_of(ctx)
        judge = _Judge(self, route, len(identities), ctx.route_name)
        judge.static = static
        flags = FEEDBACK_VERSION + ("a" if anonymous else "") + ("s" if route.sensitive else "")
        ctx.feedback = (flags, *(key for _, key in identities))
        if ctx.identity.country and self.travel_countries:
            for kind, key in identities:
                if kind in _TRAVELLERS:
                    travel = CountDistinct(f"travel:{key}", ctx.identity.country, self.travel_countries, self.travel_window_ms, enforce=False, owner=key)
                    ctx.plan(travel, _TRAVEL)
        if self.rotation_addresses:
            for kind, key in identities:
                if kind == "subnet6":
                    rotation = CountDistinct(f"rot:{key}", ctx.identity.client_ip, self.rotation_addresses, self.rotation_window_ms, enforce=False, owner=key)
                    ctx.plan(rotation, _ROTATION)
        for kind, key in identities:
            ctx.plan(
                Reputation(
                    key, self.half_life_ms, self.ttl_ms, evidence=tuple(evidence), number=number,
                    route_bit=route.bit, derived=self._derived(anonymous, kind),
                ),
                _Part(judge, kind),
            )  # fmt: skip
        for action in route.actions:
            if action.do == "challenge" and action.challenger is not None and _SOLUTION in ctx.req.headers:
                judge.solution = action.challenger.check(ctx, ctx.identity.client_key, ctx.route_name)
            if action.do == "throttle" and action.quota is not None:
                q = action.quota
                key, owner = q.by.render(ctx)
                ctx.plan(TakeTokens(f"{q.name}:{key}", q.interval_ms, q.burst, q.cost, enforce=False, owner=owner), _Throttle(judge))
        ctx.finalizers.append(judge.finish)

    # -- after the decision ------------------------------------------------------------

    def outcome_ops(self, ctx: Ctx, code: str, route: RouteReputation | None) -> list[Op]:
        """Evidence that the decision revealed, as operations for a second, background batch."""
        if ctx.identity.tier == "verified-bot":
            return []
        # a request refused before planning (an authentication failure) never recorded its own evidence
        unrecorded = ctx.evidence if not ctx.feedback else []
        ops = self.evidence_ops(ctx, [*outcome_evidence(code), *unrecorded, *ctx.late_evidence])
        if route is not None and route.sensitive and code.split(".", 1)[0] in ("jwt", "sig", "auth"):
            # failed logins count against the address and its network, whoever they claim to be
            ops += self.evidence_ops(ctx, [("login.failure", 1.0)], kinds=("ip", "subnet", "subnet6"))
        return ops

    def evidence_ops(self, ctx: Ctx, evidence: Sequence[tuple[str, float]], kinds: Sequence[str] | None = None) -> list[Op]:
        """Reputation operations that add ``evidence`` to the request's identities (no arrival)."""
        return self._evidence_ops(self.identities_of(ctx), _anonymous(ctx), evidence, kinds)

    def _evidence_ops(
        self, identities: Sequence[tuple[str, str]], anonymous: bool, evidence: Sequence[tuple[str, float]],
        kinds: Sequence[str] | None = None,
    ) -> list[Op]:  # fmt: skip
        weighted = tuple((n, round(min(s, 1.0) * self.weight(n, anonymous), 6)) for n, s in evidence if s > 0)
        weighted = tuple((n, w) for n, w in weighted if w > 0)
        if not weighted:
            return []
        return [
            Reputation(key, self.half_life_ms, self.ttl_ms, evidence=weighted, arrival=False)
            for kind, key in identities
            if kinds is None or kind in kinds
        ]

    # -- the backend's answer ----------------------------------------------------------

    def status_ops(self, feedback: Sequence[str], status: int) -> list[Op]:
        """The evidence of the backend's ``status`` for the identities of ``feedback`` (none if it is not ours).

        ``plan`` leaves the feedback in ``ctx.feedback``: a version and flags,
        then the identity keys. The gRPC door puts it in Envoy's dynamic
        metadata; Envoy's access log service returns it with the response code
        (adapters/envoy_als.py), to any authz process: nothing is remembered
        between the two.
        """
        identities = parse_feedback(feedback)
        if identities is None or not 400 <= status < 500:
            return []
        flags = feedback[0]
        anonymous = "a" in flags
        ops = self._evidence_ops(identities, anonymous, [("status.404" if status == 404 else "status.4xx", 1.0)])
        if "s" in flags and status in (401, 403):
            # a login the backend refused: against the address and its network, as authz's own refusals
            ops += self._evidence_ops(identities, anonymous, [("login.failure", 1.0)], kinds=("ip", "subnet", "subnet6"))
        return ops

    # -- the score --------------------------------------------------------------------

    def score(
        self, standings: Sequence[tuple[str, Standing]], extra: Sequence[tuple[str, float]] = (),
        fixed: Sequence[tuple[str, float]] = (),
    ) -> tuple[float, str, list[tuple[str, float]]]:  # fmt: skip
        """(the request's score, the identity kind that gave it, its top signals with their share of the score).

        ``extra``: this request's evidence that no record holds yet (a broken journey);
        ``fixed``: what the address is (a list, a hosting network), counted as it is, whatever
        the identity's volume.
        """
        best: tuple[float, str, list[tuple[str, float]]] = (0.0, "", [])
        for kind, standing in standings:
            signals = dict(standing.signals)
            for name, amount in extra:
                signals[name] = signals.get(name, 0.0) + amount
            behaviour = sum(signals.values())
            # a busy identity's evidence counts by its rate: the base rate of honest mistakes
            # (a 404, a refused quota) of many people behind one address stays small
            counted = behaviour * self.volume / standing.count if standing.count > self.volume else behaviour
            scaled = counted / behaviour if behaviour > 0 else 1.0
            for name, amount in fixed:
                signals[name] = signals.get(name, 0.0) + amount / scaled  # shown at its full weight
                counted += amount
            total = sum(signals.values())
            raw = 100.0 * counted / (counted + self.scale) if counted > 0 else 0.0
            s = raw * self.kind_weights.get(kind, 1.0)
            if s > best[0]:
                ranked = sorted(signals.items(), key=lambda kv: -kv[1])[: self.top]
                best = (s, kind, [(name, round(s * v / total, 1)) for name, v in ranked])
        return round(best[0], 1), best[1], best[2]


#: the first item of a feedback tuple starts with this; its other letters are flags
FEEDBACK_VERSION = "1"
_KEY_KINDS = {"ip": "ip", "net": "subnet", "sub": "subject", "kid": "key_id", "sess": "session", "dev": "device"}
#: an identity key is a kind prefix and at most a method and a (hashed past 96 characters) value
_MAX_KEY = 160


def parse_feedback(feedback: Sequence[str]) -> list[tuple[str, str]] | None:
    """(kind, key) of each identity in a feedback tuple; None if it is not one authz wrote.

    It comes back from the proxy: bounded and checked as any input is.
    """
    if not 2 <= len(feedback) <= 1 + len(IDENTITY_KINDS) or not feedback[0].startswith(FEEDBACK_VERSION):
        return None
    if len(feedback[0]) > 3 or not set(feedback[0][1:]) <= {"a", "s"}:
        return None
    out = []
    for key in feedback[1:]:
        kind = _KEY_KINDS.get(key.partition(":")[0])
        if kind == "subnet" and key.count(":") > 1:
            kind = "subnet6"
        if kind is None or len(key) > _MAX_KEY or not key.isprintable():
            return None
        out.append((kind, key))
    return out


def outcome_evidence(code: str) -> list[tuple[str, float]]:
    """What a decision's reason reveals about the sender."""
    family = code.split(".", 1)[0]
    if code.endswith(".replay"):
        return [("replay", 1.0)]
    if family in ("jwt", "sig") and code not in ("jwt.keys_unavailable", "sig.replay_unverifiable"):
        return [("auth.failure", 1.0)]
    if code == "quota.exhausted":
        return [("quota.exhausted", 1.0)]
    if code == "quota.cooldown":
        return [("quota.cooldown", 1.0)]
    return []


def _anonymous(ctx: Ctx) -> bool:
    return not (ctx.identity.subject or ctx.identity.key_id)


class _Judge:
    """Collects the identities' standings and the throttle's result, then acts once (a finalizer)."""

    __slots__ = ("stage", "route", "route_name", "expected", "standings", "throttle", "solution", "static")

    def __init__(self, stage: ReputationStage, route: RouteReputation, expected: int, route_name: str) -> None:
        self.stage = stage
        self.route = route
        self.route_name = route_name
        self.expected = expected
        self.standings: list[tuple[str, Standing]] = []
        self.throttle: Tokens | None = None
        #: the request's Authz-Solution, checked before the score is known (its claim joins the batch)
        self.solution: Any = None
        #: what the address is (on a list, a hosting network): counted once, not per request
        self.static: list[tuple[str, float]] = []

    def finish(self, ctx: Ctx) -> None:
        stage, route = self.stage, self.route
        if not self.standings:
            return  # the store did not answer for reputation (on_store_error decided)
        extra: list[tuple[str, float]] = []
        if route.after and not any(route.after & st.routes for _, st in self.standings):
            w = stage.weight("journey", _anonymous(ctx))
            extra.append(("journey", w))
            ctx.late_evidence.append(("journey", 1.0))
        score, kind, top = stage.score(self.standings, extra, self.static)
        ctx.score = score
        ctx.top_signals = top
        ctx.signals.append(("reputation.score", f"{score:g}"))
        if kind:
            ctx.signals.append(("reputation.identity", kind))
        if top:
            ctx.signals.append(("reputation.top", ",".join(f"{n}={c:g}" for n, c in top)))
        if stage.score_header:
            ctx.upstream_headers.append(("x-authz-score", f"{score:g}"))
        if stage.signals_header and top:
            ctx.upstream_headers.append(("x-authz-signals", ",".join(n for n, _ in top)))
        action = None
        for a in route.actions:
            if score >= a.at:
                action = a
        if action is None:
            return
        if route.monitor or stage.monitor:
            ctx.signals.append(("reputation.would", action.do))
            return
        ctx.signals.append(("reputation.action", action.do))
        self._act(ctx, action, top)

    def _challenge(self, ctx: Ctx, challenger: Challenger) -> None:
        """Pass a solution of a hard enough challenge (its single use was claimed in the batch), else challenge.

        The difficulty grows with the score (``Challenger.difficulty_for``): each
        step doubles the expected work.
        """
        needed = challenger.difficulty_for(ctx.score or 0.0)
        solution = self.solution
        if solution is not None and solution.passed and solution.difficulty >= needed:
            if ctx.reason is None:  # its claim was not refused as a replay
                ctx.signals.append(("reputation.challenge", f"passed d={solution.difficulty}"))
            return
        why = solution.reason if solution is not None and solution.reason is not None else REPUTATION_CHALLENGED
        if solution is not None and solution.passed:
            ctx.signals.append(("reputation.challenge", f"insufficient d={solution.difficulty} < {needed}"))
        challenger.refuse(ctx, why, ctx.identity.client_key, self.route_name, needed)

    def _act(self, ctx: Ctx, action: Action, top: list[tuple[str, float]]) -> None:
        do = action.do
        if do == "tag":
            if not self.stage.signals_header:  # else already there
                ctx.upstream_headers.append(("x-authz-signals", ",".join(n for n, _ in top)))
        elif do == "throttle":
            t = self.throttle
            if t is not None and not t.allowed and ctx.reason is None:
                ctx.refuse(REPUTATION_THROTTLED)
                ctx.deny_headers.append(("retry-after", str(max((t.retry_after_ms + 999) // 1000, 1))))
        elif do == "tarpit":
            ctx.delay_ms = max(ctx.delay_ms, min(action.delay_ms, self.stage.max_tarpit_ms))
        elif do == "challenge" and action.challenger is not None:
            self._challenge(ctx, action.challenger)
        elif do == "decoy" and action.decoy is not None:
            ctx.refuse(REPUTATION_DECOY, status=action.decoy.status)
            ctx.decoy = (action.decoy.status, action.decoy.content_type, action.decoy.body)
        elif do == "deny":
            ctx.refuse(REPUTATION_DENIED)


class _Part:
    """Judges one identity's operation: hands its standing to the request's judge."""

    __slots__ = ("owner", "kind_name")

    def __init__(self, owner: _Judge, kind_name: str) -> None:
        self.owner = owner
        self.kind_name = kind_name

    @property
    def kind(self) -> str:
        return "reputation"

    def judge(self, result: Result, op: Op, ctx: Ctx) -> None:
        assert isinstance(result, Standing)
        self.owner.standings.append((self.kind_name, result))


class _TooMany:
    """A distinct count past its limit is evidence, recorded with the outcome (once per request).

    ``geo.travel``: one credential or session from too many countries;
    ``ipv6.rotation``: too many addresses of one IPv6 /64.
    """

    __slots__ = ("evidence", "signal", "unit")

    def __init__(self, evidence: str, signal: str, unit: str) -> None:
        self.evidence, self.signal, self.unit = evidence, signal, unit

    @property
    def kind(self) -> str:
        return "reputation"

    def judge(self, result: Result, op: Op, ctx: Ctx) -> None:
        assert isinstance(result, Distinct)
        if result.exceeded and (self.evidence, 1.0) not in ctx.late_evidence:
            ctx.late_evidence.append((self.evidence, 1.0))
            ctx.signals.append((self.signal, f"{result.count} {self.unit}"))


_TRAVEL = _TooMany("geo.travel", "reputation.travel", "countries")
_ROTATION = _TooMany("ipv6.rotation", "reputation.rotation", "addresses")
#: the identities that travel with their holder (an address does not)
_TRAVELLERS = ("subject", "key_id", "session")


class _Throttle:
    __slots__ = ("owner",)

    def __init__(self, owner: _Judge) -> None:
        self.owner = owner

    @property
    def kind(self) -> str:
        return "reputation"

    def judge(self, result: Result, op: Op, ctx: Ctx) -> None:
        assert isinstance(result, Tokens)
        self.owner.throttle = result


# -- configuration ---------------------------------------------------------------------


def compile_reputation(node: Node, cc: CompileContext[KeyRing]) -> ReputationStage:
    """The global ``reputation`` section."""
    node.keys(allowed={"half_life", "ttl", "scale", "identities", "weights", "cadence", "burst", "sequence", "travel", "rotation", "volume", "claimed_bots", "monitor", "score_header", "signals_header", "max_tarpit", "top"})
    half_life = node.get("half_life", "10m").duration_ms(min_ms=1000)
    ttl = node.get("ttl", f"{half_life * 4}ms").duration_ms(min_ms=half_life)
    identities = []
    for item in node.get("identities", list(IDENTITY_KINDS)).items():
        kind = item.str()
        if kind not in IDENTITY_KINDS:
            item.error(f"not an identity: {kind!r} (one of {', '.join(IDENTITY_KINDS)})")
        identities.append(kind)
    weights: dict[str, float] = {}
    for name, wnode in node.get("weights", {}).entries():
        if signal_for(name) is None and not name.endswith("."):
            wnode.error(f"unknown signal {name!r} (docs/signals.md lists them)")
        weights[name] = wnode.number(min=0.0, max=1000.0)
    cad = node.get("cadence", {})
    cad.keys(allowed={"min_intervals", "max_cv"})
    burst = node.get("burst", {})
    burst.keys(allowed={"rate", "window"})
    seq = node.get("sequence", {})
    seq.keys(allowed={"min_run"})
    travel = node.get("travel", {})
    travel.keys(allowed={"window", "countries"})
    rotation = node.get("rotation", {})
    rotation.keys(allowed={"window", "addresses"})
    d = Derived()
    derived = Derived(
        alpha=d.alpha,
        cadence_min=cad.get("min_intervals", d.cadence_min).int(min=2, max=1000),
        cadence_cv=cad.get("max_cv", d.cadence_cv).number(min=0.0, max=1.0),
        cadence_weight=weights.get("cadence", SIGNALS["cadence"].weight),
        burst_half_life_ms=burst.get("window", f"{d.burst_half_life_ms}ms").duration_ms(min_ms=100),
        burst_rate=burst.get("rate", d.burst_rate).number(min=1.0, max=100_000.0),
        burst_weight=weights.get("burst", SIGNALS["burst"].weight),
        sequence_min=seq.get("min_run", d.sequence_min).int(min=1, max=1000),
        sequence_weight=weights.get("sequence", SIGNALS["sequence"].weight),
    )
    return ReputationStage(
        half_life_ms=half_life,
        ttl_ms=ttl,
        scale=node.get("scale", 10.0).number(min=0.1, max=10_000.0),
        identities=tuple(identities),
        weights=weights,
        derived=derived,
        monitor=node.get("monitor", False).bool(),
        score_header=node.get("score_header", True).bool(),
        signals_header=node.get("signals_header", False).bool(),
        max_tarpit_ms=node.get("max_tarpit", "200ms").duration_ms(min_ms=0),
        top=node.get("top", 3).int(min=1, max=20),
        volume=node.get("volume", 50).number(min=1.0, max=1_000_000.0),
        claimed_bots=_claimed_bots(node.get("claimed_bots", [])),
        travel_window_ms=travel.get("window", "1h").duration_ms(min_ms=60_000),
        # 0 turns it off
        travel_countries=travel.get("countries", 1).int(min=0, max=50),
        rotation_window_ms=rotation.get("window", "10m").duration_ms(min_ms=10_000),
        # 0 turns it off
        rotation_addresses=rotation.get("addresses", 16).int(min=0, max=4096),
    )


def _claimed_bots(node: Node) -> re.Pattern[str] | None:
    words = []
    for item in node.items():
        word = item.str()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,63}", word):
            item.error(f"a crawler's user-agent word (letters, digits, '.', '_', '-'), got {word!r}")
        words.append(re.escape(word))
    return re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE) if words else None


def compile_route_reputation(
    node: Node, quotas: Mapping[str, Any], route_bits: Mapping[str, int], route_name: str, stage: ReputationStage | None,
    challengers: Mapping[str, Any] | None = None,
) -> RouteReputation:
    """A route's ``reputation`` key: ``{actions: [...], monitor, after: [routes], sensitive}``."""
    if stage is None:
        node.error("a route's reputation needs the policy's top-level reputation section")
    challengers = challengers or {}
    node.keys(allowed={"actions", "monitor", "after", "sensitive"})
    actions: list[Action] = []
    last = -1.0
    for item in node.get("actions", []).items():
        item.keys(allowed={"at", "do", "quota", "delay", "status", "content_type", "body", "challenge"}, required={"at", "do"})
        at = item.get("at").number(min=0.0, max=100.0)
        if at <= last:
            item.get("at").error("actions are listed by rising score")
        last = at
        do = item.get("do").str(choices=set(ACTIONS))
        quota = None
        if do == "throttle":
            qname = item.get("quota").str()
            q = quotas.get(qname)
            if q is None or not hasattr(q, "interval_ms"):  # a distinct-count limit has no bucket
                item.get("quota").error(f"no bucket quota named {qname!r} in quotas")
            quota = q
        elif item.has("quota"):
            item.get("quota").error("only throttle takes a quota")
        delay = item.get("delay", "100ms").duration_ms(min_ms=1) if do == "tarpit" else 0
        if do == "tarpit" and delay > stage.max_tarpit_ms:
            item.get("delay").error(f"at most the reputation section's max_tarpit ({stage.max_tarpit_ms} ms): longer holds outlast Envoy's check timeout")
        decoy = None
        if do == "decoy":
            decoy = Decoy(
                # not 2xx: behind forward-auth, nginx auth_request and Envoy http_service any
                # 2xx from authz means "allow", so a 2xx decoy would let the request through
                status=item.get("status", 404).int(min=300, max=599),
                content_type=item.get("content_type", "application/json").str(),
                body=item.get("body", "[]").str(nonempty=False).encode(),
            )
        challenger = None
        if do == "challenge":
            cname = item.get("challenge", "default").str()
            challenger = challengers.get(cname)
            if challenger is None:
                where = item.get("challenge") if item.has("challenge") else item.get("do")
                where.error(f"no challenger named {cname!r} in the challenges section (docs/challenges.md)")
        elif item.has("challenge"):
            item.get("challenge").error("only do: challenge takes a challenge")
        actions.append(Action(at=at, do=do, quota=quota, delay_ms=delay, decoy=decoy, challenger=challenger))
    after_names = tuple(node.get("after", []).str_list())
    after = 0
    for i, name in enumerate(after_names):
        if name not in route_bits:
            node.get("after").items()[i].error(f"no route named {name!r} (routes are tracked by name)")
        after |= route_bits[name]
    return RouteReputation(
        actions=tuple(actions),
        monitor=node.get("monitor", False).bool(),
        after=after,
        after_names=after_names,
        bit=route_bits.get(route_name, 0),
        sensitive=node.get("sensitive", False).bool(),
    )


__all__ = [
    "ACTIONS",
    "IDENTITY_KINDS",
    "SIGNALS",
    "Action",
    "ReputationStage",
    "RouteReputation",
    "compile_reputation",
    "compile_route_reputation",
    "identity_key",
    "outcome_evidence",
    "parse_feedback",
    "signal_for",
    "signals_table",
]
