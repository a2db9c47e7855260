"""The admin gRPC API (protos/authz/admin/v1/admin.proto): decisions, clients, the policy.

Served on the admin listener only (server/app.py), each call authenticated
first (server/admin_auth.py). None of it touches the hot path:

* **Decisions** reads the decision ring; ``WatchDecisions`` gives each
  watcher a bounded queue that the decision sink fills without waiting
  (``Watchers.publish``): a watcher that falls behind loses decisions,
  counted in ``dropped``, and never slows a check. ``Explain`` runs the
  engine as a dry run (``Engine.explain``) on a request given as Envoy's
  CheckRequest JSON, through the ext_authz door's own adapter, or described
  field by field (turned into the same CheckRequest first, so both take the
  same checks).
* **Clients** shows and forgets what the store keeps about one identity:
  its reputation, through the reputation stage's own score, and the bucket
  of each quota keyed by that identity alone, all read in one dry-run batch
  (``TakeTokens`` of cost 0 peeks); a reset is one batch of ``Forget``.
* **Policy** shows the running policy, validates a candidate with the same
  compiler (files it names are read from the running policy's directory)
  and reloads through the ``Reloader``.

Every change is audited (``Audit``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import grpc
from envoy.config.core.v3 import address_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from google.protobuf import json_format

from authz.adapters import Malformed, envoy_grpc
from authz.admin.v1 import admin_pb2, admin_pb2_grpc
from authz.config.cidr import canonical_ip, subnet_of
from authz.decision import Decision, Outcome
from authz.decisionlog import DecisionLog
from authz.errors import ConfigError, StoreError
from authz.pipeline import Engine, Verdict
from authz.policy.compile import load_policy
from authz.policy.model import Policy
from authz.request import Request
from authz.server.admin_auth import Audit
from authz.server.reload import Reloader
from authz.stages.quota import Quota, fact_part
from authz.stages.reputation import identity_key
from authz.store.base import Op, Result, Tokens
from authz.store.ops import Forget, Reputation, Standing, TakeTokens

#: decisions a watcher may fall behind by before it loses them
WATCH_QUEUE = 1024
#: a filter's identity kinds (``kind:value``) and the decision fields they match
FILTER_KINDS = {"ip": "client_ip", "sub": "subject", "key": "key_id"}
#: a client's identity kinds (``kind:value``): reputation identities and quota facts
CLIENT_KINDS = ("ip", "subnet", "subnet6", "sub", "key", "session", "device")
_OUTCOMES = frozenset(o.value for o in Outcome)
_MAX_VALUE = 512
_UNREADABLE = Request(method="", path="", door="grpc")


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("abort raises")


def to_proto(d: Decision) -> admin_pb2.Decision:
    ident = d.identity
    return admin_pb2.Decision(
        id=d.id,
        time_ms=d.time_ms,
        outcome=d.outcome.value,
        http_status=d.status,
        reason=d.reason,
        route=d.route,
        method=d.method,
        host=d.host,
        path=d.path,
        client_ip=ident.client_ip,
        subject=ident.subject,
        key_id=ident.key_id,
        auth_method=ident.method,
        signals=[admin_pb2.Signal(name=n, value=v) for n, v in d.signals],
        duration_us=d.duration_us,
        door=d.door,
        route_path=d.route_path,
        score=d.score or 0.0,
        policy_version=d.policy_version,
        tier=ident.tier,
        reason_text=d.reason.description,
    )


# -- filters ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filter:
    """A DecisionFilter, checked once: what ``ListDecisions`` and ``WatchDecisions`` keep."""

    outcome: str = ""
    reason: str = ""
    route: str = ""
    client_ip: str = ""
    #: the Decision fields an identity may be in, and its value
    identity_fields: tuple[str, ...] = ()
    identity: str = ""
    since_ms: int = 0
    until_ms: int = 0

    @classmethod
    def parse(cls, f: admin_pb2.DecisionFilter) -> Filter:
        """:raises ValueError: an unknown outcome or identity kind, a reversed time range"""
        if f.outcome and f.outcome not in _OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(sorted(_OUTCOMES))}; got {f.outcome[:64]!r}")
        fields: tuple[str, ...] = ()
        value = ""
        if f.identity:
            kind, sep, rest = f.identity.partition(":")
            if sep and kind in FILTER_KINDS:
                fields, value = (FILTER_KINDS[kind],), rest
            elif sep and kind.isalpha() and canonical_ip(f.identity) is None:
                raise ValueError(f"identity is kind:value with kind one of {', '.join(FILTER_KINDS)}, or a bare value; got kind {kind[:32]!r}")
            else:  # a bare value: an address, a subject or a key id
                fields, value = tuple(FILTER_KINDS.values()), f.identity
            if fields == ("client_ip",) or len(fields) > 1:
                value = canonical_ip(value) or value
        if f.since_ms < 0 or f.until_ms < 0 or (f.until_ms and f.since_ms > f.until_ms):
            raise ValueError("since_ms and until_ms are times (ms since the epoch), since_ms at most until_ms")
        client_ip = canonical_ip(f.client_ip) or f.client_ip if f.client_ip else ""
        return cls(f.outcome, f.reason, f.route, client_ip, fields, value, f.since_ms, f.until_ms)

    def matches(self, d: Decision) -> bool:
        if self.outcome and d.outcome.value != self.outcome:
            return False
        reason = self.reason
        if reason and not (d.reason == reason or (reason.endswith(".") and d.reason.startswith(reason))):
            return False
        if self.route and d.route != self.route:
            return False
        ident = d.identity
        if self.client_ip and ident.client_ip != self.client_ip:
            return False
        if self.identity_fields and not any(getattr(ident, name) == self.identity for name in self.identity_fields):
            return False
        if self.since_ms and d.time_ms < self.since_ms:
            return False
        return not (self.until_ms and d.time_ms > self.until_ms)


# -- watchers ----------------------------------------------------------------------------


class Watcher:
    """One WatchDecisions call: the decisions it has not sent yet (bounded), and how many it lost."""

    __slots__ = ("filter", "queue", "size", "dropped", "ready")

    def __init__(self, flt: Filter, size: int) -> None:
        self.filter = flt
        self.queue: deque[Decision] = deque()
        self.size = size
        self.dropped = 0
        self.ready = asyncio.Event()

    def offer(self, decision: Decision) -> None:
        if not self.filter.matches(decision):
            return
        if len(self.queue) >= self.size:
            self.dropped += 1
            return
        self.queue.append(decision)
        self.ready.set()


class Watchers:
    """Every watcher of this process; ``publish`` is called with every decision and never waits."""

    def __init__(self, size: int = WATCH_QUEUE) -> None:
        self.size = size
        self._watchers: set[Watcher] = set()

    def __len__(self) -> int:
        return len(self._watchers)

    def publish(self, decision: Decision) -> None:
        if self._watchers:
            for w in self._watchers:
                w.offer(decision)

    def add(self, flt: Filter) -> Watcher:
        w = Watcher(flt, self.size)
        self._watchers.add(w)
        return w

    def remove(self, w: Watcher) -> None:
        self._watchers.discard(w)


# -- Decisions -----------------------------------------------------------------------------


def _stage(v: Verdict) -> admin_pb2.StageVerdict:
    return admin_pb2.StageVerdict(
        stage=v.stage, verdict=v.verdict, detail=v.detail, signals=[admin_pb2.Signal(name=n, value=str(x)) for n, x in v.signals]
    )


def check_request_of(http: admin_pb2.HttpRequest) -> external_auth_pb2.CheckRequest:
    """The CheckRequest Envoy would send for a request described field by field."""
    req = attribute_context_pb2.AttributeContext.HttpRequest(
        method=http.method, path=http.path, host=http.host, scheme="https", protocol="HTTP/1.1",
        headers={name.lower(): value for name, value in http.headers.items()},
    )  # fmt: skip
    source = attribute_context_pb2.AttributeContext.Peer(
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=http.source_address, port_value=0))
    )
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(source=source, request=attribute_context_pb2.AttributeContext.Request(http=req))
    )


class DecisionsService(admin_pb2_grpc.DecisionsServicer):
    def __init__(self, decisions: DecisionLog, engine: Engine, watchers: Watchers) -> None:
        self.decisions = decisions
        self.engine = engine
        self.watchers = watchers

    async def GetDecision(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.GetDecisionRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Decision:
        d = self.decisions.get(request.id)
        if d is None:
            return await _abort(context, grpc.StatusCode.NOT_FOUND, f"no decision {request.id[:64]!r} in the ring")
        return to_proto(d)

    async def _filter(self, f: admin_pb2.DecisionFilter, context: grpc.aio.ServicerContext) -> Filter:
        try:
            return Filter.parse(f)
        except ValueError as exc:
            return await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def ListDecisions(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ListDecisionsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListDecisionsResponse:
        flt = await self._filter(request.filter, context)
        limit = min(request.limit or 50, self.decisions.ring.maxlen or 50)
        out = []
        for d in self.decisions.recent():
            if flt.matches(d):
                out.append(to_proto(d))
                if len(out) >= limit:
                    break
        return admin_pb2.ListDecisionsResponse(decisions=out)

    async def WatchDecisions(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.WatchDecisionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[admin_pb2.WatchDecisionsResponse]:
        flt = await self._filter(request.filter, context)
        watcher = self.watchers.add(flt)
        try:
            while True:
                if not watcher.queue:
                    watcher.ready.clear()
                    await watcher.ready.wait()
                d = watcher.queue.popleft()
                yield admin_pb2.WatchDecisionsResponse(decision=to_proto(d), dropped=watcher.dropped)
        finally:
            self.watchers.remove(watcher)

    async def Explain(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ExplainRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ExplainResponse:
        engine = self.engine
        if request.check_request_json:
            check = external_auth_pb2.CheckRequest()
            try:
                json_format.Parse(request.check_request_json, check)
            except json_format.ParseError as exc:
                return await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"check_request_json is not an envoy.service.auth.v3.CheckRequest: {str(exc)[:300]}")
        elif request.HasField("request"):
            check = check_request_of(request.request)
        else:
            return await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "give check_request_json or request")
        limits = engine.policy.limits
        try:
            req = envoy_grpc.to_request(check, max_headers=limits.max_headers * 4, max_header_bytes=limits.max_header_bytes)
        except Malformed as exc:
            decision, stages = engine.explain_malformed(_UNREADABLE, exc.reason, exc.detail)
        else:
            decision, stages = await engine.explain(req)
        headers = decision.upstream_headers + decision.client_headers if decision.allowed else decision.client_headers
        return admin_pb2.ExplainResponse(
            decision=to_proto(decision),
            stages=[_stage(v) for v in stages],
            headers=[admin_pb2.Signal(name=n, value=v) for n, v in headers],
        )


# -- Clients ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientOps:
    """What the store keeps about one identity: its reputation records and its quota buckets."""

    reputation: tuple[tuple[str, Reputation], ...]
    quotas: tuple[tuple[Quota, TakeTokens], ...]

    @property
    def ops(self) -> list[Op]:
        return [op for _, op in self.reputation] + [op for _, op in self.quotas]


def client_ops(identity: str, policy: Policy) -> ClientOps:
    """The dry-run operations that read one identity's state under ``policy``.

    :raises ValueError: an unknown kind or a value that is not one (the message lists the kinds)
    """
    kind, sep, value = identity.partition(":")
    if not sep or kind not in CLIENT_KINDS or not value or len(value) > _MAX_VALUE or not value.isprintable():
        raise ValueError(f"identity is kind:value with kind one of {', '.join(CLIENT_KINDS)} (ip:203.0.113.7, sub:alice)")
    rep_kinds: list[tuple[str, str, str]] = []  # (reputation kind, value, method)
    facts: list[tuple[str, str]] = []  # (quota fact, key part)
    if kind == "ip":
        ip = canonical_ip(value)
        if ip is None:
            raise ValueError(f"ip: {value[:64]!r} is not an IP address")
        rep_kinds.append(("ip", ip, ""))
        facts += [("ip", fact_part("ip", ip)), ("client", fact_part("ip", ip))]
    elif kind in ("subnet", "subnet6"):
        net = _network(value, kind)
        rep_kinds.append(("subnet6" if ":" in net else "subnet", net, ""))
        facts.append(("subnet", fact_part("subnet", net)))
    elif kind in ("sub", "key"):
        rkind = "subject" if kind == "sub" else "key_id"
        methods = sorted({a.label for a in policy.authenticators.values()})
        named = [m for m in methods if value.startswith(m + ":") and len(value) > len(m) + 1]
        if named:  # sub:jwt:okta:alice names the method that proved it
            method = max(named, key=len)
            rep_kinds.append((rkind, value[len(method) + 1 :], method))
            value = value[len(method) + 1 :]
        else:
            rep_kinds += [(rkind, value, m) for m in methods if not (rkind == "key_id" and m.startswith("jwt:"))]
        fact = "subject" if kind == "sub" else "key_id"
        facts.append((fact, fact_part(fact, value)))
        if kind == "sub":
            facts.append(("client", fact_part("subject", value)))
    else:
        rep_kinds.append((kind, value, ""))
    reputation: list[tuple[str, Reputation]] = []
    stage = policy.reputation
    if stage is not None:
        scored = set(stage.identities) | ({"subnet6"} if "subnet" in stage.identities else set())
        for rkind, v, method in rep_kinds:
            if rkind in scored:
                key = identity_key(rkind, v, method)
                reputation.append((rkind, Reputation(key, stage.half_life_ms, stage.ttl_ms, arrival=False)))
    quotas: list[tuple[Quota, TakeTokens]] = []
    for q in policy.quotas.values():
        if not isinstance(q, Quota) or len(q.by.facts) != 1:
            continue
        for fact, part in facts:
            if q.by.facts[0] == fact:
                op = TakeTokens(f"{q.name}:{part}", q.interval_ms, q.burst, 0, enforce=not q.shadow, owner=part, cooldown=q.cooldown)
                quotas.append((q, op))
    return ClientOps(tuple(reputation), tuple(quotas))


def _network(value: str, kind: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{kind}: {value[:64]!r} is not a network (203.0.113.0/24, 2001:db8:1:2::/64)") from None
    want = 64 if kind == "subnet6" or net.version == 6 else 24
    if (kind == "subnet6") != (net.version == 6) or net.prefixlen != want:
        raise ValueError(f"{kind}: authz keeps state per IPv4 /24 (subnet:) and IPv6 /64 (subnet6:); got {value[:64]!r}")
    return subnet_of(str(net.network_address))


class ClientsService(admin_pb2_grpc.ClientsServicer):
    def __init__(self, engine: Engine, audit: Audit, now_ms: Callable[[], int]) -> None:
        self.engine = engine
        self.audit = audit
        self._now = now_ms

    async def _ops(self, request: admin_pb2.ClientRequest, context: grpc.aio.ServicerContext) -> ClientOps:
        try:
            return client_ops(request.identity, self.engine.policy)
        except ValueError as exc:
            return await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def _apply(self, ops: Sequence[Op], context: grpc.aio.ServicerContext, *, dry_run: bool) -> list[Result]:
        if not ops:
            return []
        store = self.engine.store
        try:
            if dry_run:
                results: list[Result] = await store.apply(ops, self._now(), dry_run=True)
            else:
                results = await store.apply(ops, self._now())
        except StoreError as exc:
            return await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        return results

    async def ShowClient(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ClientRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ClientState:
        found = await self._ops(request, context)
        results = await self._apply(found.ops, context, dry_run=True)
        standings = [(kind, r) for (kind, _), r in zip(found.reputation, results[: len(found.reputation)], strict=True) if isinstance(r, Standing)]
        state = admin_pb2.ClientState(identity=request.identity)
        stage = self.engine.policy.reputation
        if stage is not None and standings:
            # several methods may have proved one subject: its busiest record
            kind, best = max(standings, key=lambda ks: (stage.score([ks])[0], ks[1].count))
            state.score = stage.score([(kind, best)])[0]
            state.requests = best.count
            state.signals.extend(admin_pb2.Signal(name=n, value=f"{v:g}") for n, v in best.signals)
        for (q, op), r in zip(found.quotas, results[len(found.reputation) :], strict=True):
            assert isinstance(r, Tokens)
            state.quotas.append(
                admin_pb2.QuotaState(
                    quota=q.name, key=op.bucket, remaining=r.remaining, capacity=q.burst, reset_ms=r.reset_ms,
                    cooldown_ms=r.cooldown_ms, strikes=r.strikes,
                )
            )
        return state

    async def ResetClient(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ClientRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ResetClientResponse:
        found = await self._ops(request, context)
        results = await self._apply([Forget(op) for op in found.ops], context, dry_run=False)
        removed = sum(int(r) for r in results)
        self.audit(context, "client.reset", request.identity, removed=removed)
        return admin_pb2.ResetClientResponse(identity=request.identity, removed=removed)


# -- Policy ----------------------------------------------------------------------------------


def _compile_candidate(name: str, text: str, running: str) -> Policy:
    """Compile a candidate as if it stood beside the running policy file (the files it names are there)."""
    return load_policy(name, text, base_dir=os.path.dirname(os.path.abspath(running)))


class PolicyService(admin_pb2_grpc.PolicyServicer):
    def __init__(self, engine: Engine, reloader: Reloader, audit: Audit) -> None:
        self.engine = engine
        self.reloader = reloader
        self.audit = audit

    async def ShowPolicy(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ShowPolicyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.PolicyInfo:
        policy = self.engine.policy
        last = self.reloader.last
        return admin_pb2.PolicyInfo(
            version=policy.version,
            file=policy.file,
            routes=[r.name for r in policy.routes],
            loaded_at_ms=int(self.reloader.loaded_at * 1000),
            text=policy.text,
            last_reload_error=last.error if last is not None and last.result == "refused" else "",
        )

    async def ValidatePolicy(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ValidatePolicyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ValidatePolicyResponse:
        name = request.file_name or "candidate.yaml"
        if len(name) > 255 or not name.isprintable():
            return await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "file_name is a printable name of at most 255 characters")
        try:
            policy = await asyncio.to_thread(_compile_candidate, name, request.text, self.engine.policy.file)
        except ConfigError as exc:
            return admin_pb2.ValidatePolicyResponse(ok=False, error=str(exc))
        except Exception as exc:  # a compiler bug must not end the call without an answer
            return admin_pb2.ValidatePolicyResponse(ok=False, error=f"{name}: cannot compile: {type(exc).__name__}")
        return admin_pb2.ValidatePolicyResponse(ok=True, version=policy.version, routes=[r.name for r in policy.routes])

    async def ReloadPolicy(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ReloadPolicyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ReloadPolicyResponse:
        before = self.engine.policy.version
        outcome = await self.reloader.reload_async("admin API")
        self.audit(context, "policy.reload", self.reloader.config, result=outcome.result, version=outcome.version, previous=before, error=outcome.error)
        return admin_pb2.ReloadPolicyResponse(result=outcome.result, version=outcome.version, error=outcome.error)


__all__ = [
    "CLIENT_KINDS",
    "FILTER_KINDS",
    "WATCH_QUEUE",
    "ClientsService",
    "DecisionsService",
    "Filter",
    "PolicyService",
    "Watchers",
    "check_request_of",
    "client_ops",
    "to_proto",
]
