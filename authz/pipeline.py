"""The decision pipeline: the whole product in one function.

    route -> identify -> authenticate -> plan -> apply (one store call) -> judge -> respond

Each stage lives in authz/stages/; the store in authz/store/. ``Engine.decide``
never raises: malformed input becomes a deny with a reason, a store failure
follows the route's fail-open/closed policy, and any other exception becomes
a 503 ``internal.error`` (fail closed), logged once with the decision id.

``Engine.explain`` runs the same stages as a dry run (the admin API's
Explain): the store answers every batch as it would without writing anything
(``Store.apply(..., dry_run=True)``), nothing is recorded afterwards, the
decision goes to no sink, no tarpit holds it and no metric counts it, and its
id has the prefix ``explain``. What each stage concluded is read afterwards
from the request's context and its stage boundaries (``explain_stages``), so
``decide`` pays nothing for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

from authz.clock import Clock, SystemClock
from authz.decision import (
    OK_IP_ALLOWLISTED,
    OK_STORE_UNAVAILABLE,
    REQUEST_AMBIGUOUS_PATH,
    REQUEST_TOO_LARGE,
    ROUTE_DENY,
    ROUTE_NO_MATCH,
    STORE_UNAVAILABLE,
    Decision,
    DecisionIds,
    Reason,
)
from authz.errors import StoreError
from authz.paths import names
from authz.policy.model import Policy
from authz.request import Request
from authz.stages import identify, respond
from authz.stages.authenticate import authenticate
from authz.stages.context import Ctx, StatefulCheck
from authz.stages.geo import check_countries
from authz.stages.quota import Quota
from authz.stages.route import match_route
from authz.stats import APPLY, AUTHENTICATE, IDENTIFY, JUDGE, PLAN, RESPOND, ROUTE, Laps, StageStats, new_laps
from authz.store.base import CLAIMED, Op, PartialFailure, Result, Store, Tokens
from authz.store.memory import MemoryStore

log = logging.getLogger("authz.engine")

#: background evidence batches in flight at most; more are dropped (and counted)
MAX_RECORDING = 1000
#: answers held by tarpits at once at most
MAX_TARPITS = 256
#: the prefix of an explained (dry-run) decision's id: never in the ring, never in the log
EXPLAIN_PREFIX = "explain"


def safe_traceback(exc: BaseException) -> str:
    """Where an exception happened (files, lines, functions) and its type, never its message.

    A message can quote request data (a token, a cookie); the frames and the
    type are enough to find the bug, so nothing a client sent reaches the log.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    lines = [f"  {f.filename}:{f.lineno} in {f.name}" for f in frames[-12:]]
    return "\n".join([*lines, f"{type(exc).__module__}.{type(exc).__qualname__} (message withheld)"])


class Engine:
    """Decides requests against the current policy and store.

    :param policy: the compiled policy; replace ``engine.policy`` to reload
    :param store: where state lives
    :param clock: read once per request
    :param on_decision: called with every decision (decision log, metrics); must not block
    """

    def __init__(
        self,
        policy: Policy,
        store: Store,
        *,
        clock: Clock | None = None,
        ids: DecisionIds | None = None,
        on_decision: Callable[[Decision], None] | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.clock = clock or SystemClock()
        self.ids = ids or DecisionIds()
        self.on_decision = on_decision
        #: buckets of this process alone, for quotas that fall back to them when the store fails
        self.local_store = MemoryStore(epoch_ms=0)
        self._recording: set[asyncio.Task[None]] = set()
        self._tarpits = 0
        #: evidence batches dropped (too many pending, or the store failed), tarpits not held (too many)
        self.records_dropped = 0
        self.tarpits_skipped = 0
        #: take ``clock: request`` times as they are, however far from the wall clock (replaying traffic)
        self.trust_request_time = False
        #: hold tarpitted answers (off when replaying or simulating: the delay is recorded, not waited)
        self.hold_tarpits = True
        #: each stage's latency (metrics); one perf_counter_ns per stage boundary
        self.stage_stats = StageStats()
        #: called with every request, its decision and its stage boundaries (tracing); must not block
        self.observer: Callable[[Request, Decision, Laps], None] | None = None
        self._explain_ids = DecisionIds(EXPLAIN_PREFIX)

    async def decide(self, req: Request) -> Decision:
        """The decision on one request. Never raises: anything unexpected is ``internal.error``."""
        started = time.perf_counter_ns()
        laps = new_laps(started)
        ctx: Ctx | None = None
        policy = self.policy  # one snapshot for the whole request, even across a reload
        try:
            ctx = Ctx(req, self._now(req, policy), self.ids.next())
            route_name = await self._run(ctx, policy, laps)
            duration_us = (time.perf_counter_ns() - started) // 1000
            decision = respond.finish(ctx, route_name, duration_us, policy.upstream_headers)
            laps[RESPOND] = perf_counter_ns()
            # 8. record: what the outcome revealed (a refusal's evidence), off the critical path
            if ctx.outcome is not None:
                self._record(ctx.outcome(decision.reason.code), ctx.now_ms)
        except Exception as exc:
            decision = respond.failed(req, ctx)
            log.error(
                "internal error deciding %s (decision %s, route %r); failing closed\n%s",
                req, decision.id, decision.route, safe_traceback(exc),
            )  # fmt: skip
        decision.policy_version = policy.version
        self._emit(decision)
        self.stage_stats.observe(laps)
        if self.observer is not None:
            self._observe(req, decision, laps)
        if ctx is not None and ctx.delay_ms and decision.allowed and self.hold_tarpits:
            await self._tarpit(ctx.delay_ms)
        return decision

    async def explain(self, req: Request) -> tuple[Decision, list[Verdict]]:
        """The decision the running policy would make on ``req``, and each stage's verdict, changing nothing.

        Every store batch is a dry run; the outcome's evidence is not
        recorded; the decision reaches no sink (ring, log, metrics, tracer)
        and is never held by a tarpit. A store that fails is answered by the
        route's on_store_error as in ``decide``; a ``local`` fallback is
        judged against an empty bucket of its own, not this process's.
        """
        started = time.perf_counter_ns()
        laps = new_laps(started)
        policy = self.policy
        ctx = Ctx(req, self._now(req, policy), self._explain_ids.next())
        dry = DryRun(self.store)
        try:
            route_name = await self._run(ctx, policy, laps, dry)
            decision = respond.finish(ctx, route_name, (time.perf_counter_ns() - started) // 1000, policy.upstream_headers)
        except Exception as exc:
            decision = respond.failed(req, ctx)
            dry.error = f"internal error: {type(exc).__name__}"
            log.error("internal error explaining %s (decision %s)\n%s", req, decision.id, safe_traceback(exc))
        laps[RESPOND] = perf_counter_ns()
        decision.policy_version = policy.version
        return decision, explain_stages(ctx, decision, laps, dry, policy)

    def explain_malformed(self, req: Request, reason: Reason, detail: str) -> tuple[Decision, list[Verdict]]:
        """What ``malformed`` would answer for a request its door could not read, without emitting it."""
        ctx = Ctx(req, self.clock.now_ms(), self._explain_ids.next())
        ctx.refuse(reason)
        ctx.signals.append(("request.problem", detail))
        decision = respond.finish(ctx, "")
        decision.policy_version = self.policy.version
        headers = tuple(decision.client_headers)
        stages = [
            Verdict("route", "refused", f"the door cannot read the request: {reason.code}: {detail}", (("request.problem", detail),)),
            Verdict("respond", decision.outcome.value, f"{decision.status} {reason.code}", headers),
        ]
        return decision, stages

    def _now(self, req: Request, policy: Policy) -> int:
        """The request's "now": the wall clock, or with ``clock: request`` the proxy's receive time.

        Serving, a request time further than the policy's ``max_skew`` from the
        wall clock is not believed (a stale or forged time would move quota
        windows and token expiry); replaying recorded traffic
        (``trust_request_time``) takes it as it is.
        """
        wall = self.clock.now_ms()
        if policy.clock != "request" or not req.time_ms:
            return wall
        if self.trust_request_time or abs(req.time_ms - wall) <= policy.clock_max_skew_ms:
            return req.time_ms
        return wall

    def _record(self, ops: list[Op], now_ms: int) -> None:
        """Apply ``ops`` in a second, background batch; bounded, never raising into the request."""
        if not ops:
            return
        if len(self._recording) >= MAX_RECORDING:
            self.records_dropped += 1
            return
        task = asyncio.get_running_loop().create_task(self._apply_record(ops, now_ms))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _apply_record(self, ops: list[Op], now_ms: int) -> None:
        try:
            await self.store.apply(ops, now_ms)
        except StoreError:
            self.records_dropped += 1  # evidence is best effort; a failed store is reported elsewhere

    def backend_answered(self, feedback: Sequence[str], status: int) -> bool:
        """The backend answered an allowed request with ``status``: record it as evidence (off the critical path).

        ``feedback`` is the decision's (``Decision.feedback``), handed back by
        the proxy's access log. Returns whether anything was recorded.
        """
        scoring = self.policy.reputation
        if scoring is None or not feedback:
            return False
        ops = scoring.status_ops(feedback, status)
        self._record(ops, self.clock.now_ms())
        return bool(ops)

    async def settle(self) -> None:
        """Wait for the background records (tests, shutdown)."""
        while self._recording:
            await asyncio.gather(*list(self._recording), return_exceptions=True)

    async def _tarpit(self, delay_ms: int) -> None:
        """Hold an answer (tarpit), at most MAX_TARPITS at a time: past that, answer at once."""
        if self._tarpits >= MAX_TARPITS:
            self.tarpits_skipped += 1
            return
        self._tarpits += 1
        try:
            await asyncio.sleep(delay_ms / 1000)
        finally:
            self._tarpits -= 1

    def malformed(self, req: Request, reason: Reason, detail: str) -> Decision:
        """The decision for a request its door could not even read. Never raises."""
        ctx: Ctx | None = None
        try:
            ctx = Ctx(req, self.clock.now_ms(), self.ids.next())
            ctx.refuse(reason)
            ctx.signals.append(("request.problem", detail))
            decision = respond.finish(ctx, "")
        except Exception as exc:
            decision = respond.failed(req, ctx)
            log.error("internal error refusing a malformed request (decision %s)\n%s", decision.id, safe_traceback(exc))
        decision.policy_version = self.policy.version
        self._emit(decision)
        return decision

    def _observe(self, req: Request, decision: Decision, laps: Laps) -> None:
        assert self.observer is not None
        try:
            self.observer(req, decision, laps)
        except Exception as exc:  # tracing must never turn a decision into an error
            log.error("decision observer failed for %s\n%s", decision.id, safe_traceback(exc))

    def _emit(self, decision: Decision) -> None:
        if self.on_decision is None:
            return
        try:
            self.on_decision(decision)
        except Exception as exc:  # a sink must never turn a decision into an error
            log.error("decision sink failed for %s\n%s", decision.id, safe_traceback(exc))

    async def _run(self, ctx: Ctx, policy: Policy, laps: Laps | None = None, dry: DryRun | None = None) -> str:
        """The stages; ``dry``: the store a dry run asks instead (``explain``)."""
        req = ctx.req
        if laps is None:
            laps = new_laps(perf_counter_ns())

        # 0. sanity: bounded sizes before any work that scales with them
        limits = policy.limits
        if len(req.headers) > limits.max_headers or len(req.path) + len(req.query) > limits.max_target_bytes:
            ctx.refuse(REQUEST_TOO_LARGE)
            return ""
        # ... and a path the backend could read differently (authz.paths)
        problems = req.path_problems
        ambiguous = problems & ~policy.path_allow if problems else problems
        if ambiguous:
            ctx.identity.client_ip = identify.client_ip(
                req.peer_ip, req.headers.get("x-forwarded-for"), policy.trusted_proxies
            )
            ctx.signals.append(("request.path", names(ambiguous)))
            ctx.refuse(REQUEST_AMBIGUOUS_PATH)
            return ""

        # 1. route: host, method, path -> the route's checks
        route = match_route(policy.routes, req)
        laps[ROUTE] = perf_counter_ns()
        if route is None:
            ctx.identity.client_ip = req.peer_ip
            ctx.refuse(ROUTE_NO_MATCH)
            return ""
        ctx.route_name = route.name

        # 2. identify: client address through trusted proxies; its country and network, the
        #    session and device ids, the TLS fingerprint; address and country lists; evidence
        ctx.identity.client_ip = identify.client_ip(
            req.peer_ip, req.headers.get("x-forwarded-for"), policy.trusted_proxies
        )
        if policy.geo is not None:
            policy.geo.identify(ctx)
        if policy.client_ids:
            policy.client_ids.identify(ctx)
        allowlisted = bool(route.ip) and identify.check_ip_rules(ctx, route.ip)
        laps[IDENTIFY] = perf_counter_ns()
        if allowlisted:
            ctx.reason = OK_IP_ALLOWLISTED
            return route.name
        if ctx.reason is not None:
            return route.name
        if route.countries and check_countries(ctx, route.countries):
            return route.name
        if route.action != "check":
            if route.action == "deny":
                ctx.refuse(ROUTE_DENY)
            return route.name
        if policy.evidence:
            policy.evidence.gather(ctx)

        rep, scoring = route.reputation, policy.reputation
        if rep is not None and scoring is not None:
            ctx.outcome = lambda code: scoring.outcome_ops(ctx, code, rep)

        # 3. authenticate: JWT / signatures / anonymous (pure CPU, cached)
        await authenticate(ctx, route.auth, route.anonymous)
        laps[AUTHENTICATE] = perf_counter_ns()
        if ctx.reason is not None:
            return route.name

        # 3b. challenge (route option `challenge: <name>`, authz.stages.challenge): proof of work
        #     bound to the client and the route; without a valid solution, refuse with a fresh
        #     challenge before any store call; a solution's single-use claim joins the batch below
        if route.challenge is not None:
            route.challenge.demand(ctx, ctx.identity.client_key, route.name)
            if ctx.reason is not None:
                return route.name

        # 4. plan: every stateful check adds its operations to one batch
        #    (replay claims were planned by the authentication method above)
        tier = ctx.identity.tier
        for quota, cost in route.tiers.get(tier, route.quotas) if tier else route.quotas:
            quota.plan(ctx, cost)
        if rep is not None and scoring is not None:
            scoring.plan(ctx, rep)
        laps[PLAN] = perf_counter_ns()

        # 5. apply: one store round trip for all of them, atomically
        if ctx.ops:
            try:
                results = await (self.store if dry is None else dry).apply(ctx.ops, ctx.now_ms)
            except StoreError as exc:
                laps[APPLY] = perf_counter_ns()
                self._store_failed(ctx, route.on_store_error, exc, dry)
            else:
                laps[APPLY] = perf_counter_ns()
                # 6. judge: each check reads its own result; the first refusal decides
                for check, op, result in zip(ctx.checks, ctx.ops, results, strict=True):
                    check.judge(result, op, ctx)
            for finish in ctx.finalizers:  # judgements over several results (the reputation score)
                finish(ctx)
            laps[JUDGE] = perf_counter_ns()

        # 7. respond (in decide): headers, body, signals; 8. record (in decide): the outcome's evidence
        return route.name

    def _store_failed(self, ctx: Ctx, modes: Mapping[str, str], exc: StoreError, dry: DryRun | None = None) -> None:
        """The store could not answer for some (or all) of the batch: the route's policy decides.

        Per check family: ``closed`` refuses (503 ``store.unavailable``), ``open``
        lets the check pass, ``local`` (quotas) asks a bucket of this process
        holding its share of the limit. Results that did come back (one slot of
        a Cluster failed, the others answered) are judged as usual. A refused
        request gets back what the answering slots spent.
        """
        ctx.signals.append(("store.error", type(exc.__cause__ or exc).__name__))
        partial = exc if isinstance(exc, PartialFailure) else None
        failed = partial.failed if partial is not None else frozenset(range(len(ctx.ops)))
        closed: set[str] = set()
        local: list[tuple[StatefulCheck, Op]] = []
        for i, (check, op) in enumerate(zip(ctx.checks, ctx.ops, strict=True)):
            if i not in failed:
                assert partial is not None
                check.judge(partial.results[i], op, ctx)
                continue
            mode = modes.get(check.kind, "closed")
            if check.kind not in ctx.degraded:
                ctx.degraded.append(check.kind)
            if mode == "closed":
                closed.add(check.kind)
            elif mode == "local" and isinstance(check, Quota):
                local.append((check, check.local_op(op)))
        if closed:
            ctx.signals.append(("store.fail_closed", ",".join(sorted(closed))))
            ctx.refuse(STORE_UNAVAILABLE)
        elif local:
            ops = [op for _, op in local]
            buckets = self.local_store if dry is None else dry.local
            for (check, op), result in zip(local, buckets.apply_sync(ops, ctx.now_ms), strict=True):
                check.judge(result, op, ctx)
            ctx.signals.append(("store.fallback", "local"))
        if ctx.reason is None:
            ctx.reason = OK_STORE_UNAVAILABLE
        elif partial is not None and dry is None:  # a dry run spent nothing to give back
            partial.compensate()


# -- explaining a decision -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one stage concluded about a request (``Engine.explain``).

    :param stage: route, identify, authenticate, challenge, plan, apply, judge or respond
    :param verdict: in a word: matched, none, passed, refused, skipped, planned, answered, failed...
    :param detail: a sentence for people
    :param signals: (name, value) facts behind it
    """

    stage: str
    verdict: str
    detail: str
    signals: tuple[tuple[str, str], ...] = ()


class DryRun:
    """The store as ``explain`` asks it: every batch a dry run, each kept with its results."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches: list[tuple[list[Op], list[Result]]] = []
        self.error = ""
        #: the buckets a ``local`` fallback is judged against: empty, this explanation's own
        self.local = MemoryStore(epoch_ms=0)

    async def apply(self, ops: Sequence[Op], now_ms: int) -> list[Result]:
        try:
            results: list[Result] = await self.store.apply(ops, now_ms, dry_run=True)
        except StoreError as exc:
            self.error = str(exc)
            raise
        self.batches.append((list(ops), results))
        return results


_CLAIM_RESULTS = {CLAIMED: "claimed", 1: "already claimed", 2: "before the store's epoch"}


def _result_text(result: Any) -> str:
    if isinstance(result, Tokens):
        text = f"{'allowed' if result.allowed else 'refused'}, {result.remaining} left, full in {result.reset_ms} ms"
        if result.retry_after_ms:
            text += f", retry after {result.retry_after_ms} ms"
        if result.cooldown_ms:
            text += f", held out {result.cooldown_ms} ms"
        if result.strikes:
            text += f", {result.strikes} strikes"
        return text
    if isinstance(result, int) and not isinstance(result, bool):
        return _CLAIM_RESULTS.get(result, str(result))
    return repr(result)


def _op_text(op: Op) -> str:
    cost = getattr(op, "cost", None)
    return f"{type(op).__name__} {op.key}" + (f" (cost {cost})" if cost is not None else "")


def explain_stages(ctx: Ctx, decision: Decision, laps: Laps, dry: DryRun, policy: Policy) -> list[Verdict]:
    """Each stage's verdict, read from what the stages left in ``ctx`` and which boundaries they reached.

    A stage whose boundary is 0 was not reached; the refusal, if any, was
    made by the last stage that ran (the route is known from the context).
    """
    reason = decision.reason
    refused = not decision.allowed
    ident = ctx.identity
    route = next((r for r in policy.routes if r.name == ctx.route_name), None) if ctx.route_name else None
    out: list[Verdict] = []
    last = max((i for i in (ROUTE, IDENTIFY, AUTHENTICATE, PLAN, APPLY, JUDGE) if laps[i]), default=0)

    def verdict(stage: str, word: str, detail: str, signals: Sequence[tuple[str, str]] = ()) -> None:
        out.append(Verdict(stage, word, detail, tuple(signals)))

    # route
    if not laps[ROUTE]:
        verdict("route", "refused", f"refused before routing: {reason.code} ({reason.description})", ctx.signals[:2])
    elif route is None:
        verdict("route", "none", f"no route matches {ctx.req.method} {ctx.req.host}{ctx.req.route_path}")
    else:
        verdict("route", "matched", f"route {route.name} (action {route.action})")
    # identify
    facts = [("client_ip", ident.client_ip)]
    facts += [(n, str(v)) for n, v in (("country", ident.country), ("asn", ident.asn), ("session", ident.session), ("device", ident.device)) if v]
    evidence = [(f"evidence.{name}", f"{strength:g}") for name, strength in ctx.evidence]
    if not laps[IDENTIFY]:
        verdict("identify", "skipped", f"client {ident.client_ip or '?'}", facts)
    elif decision.reason.code == "ok.ip_allowlisted":
        verdict("identify", "allowlisted", f"client {ident.client_ip} is on an allow list: later checks skipped", facts)
    elif refused and last == IDENTIFY:
        verdict("identify", "refused", f"client {ident.client_ip}: {reason.code}", facts + evidence)
    elif route is not None and route.action != "check":
        verdict("identify", "passed", f"client {ident.client_ip}; the route's action is {route.action}: no further checks", facts)
    else:
        verdict("identify", "passed", f"client {ident.client_ip}" + (f" in {ident.country}" if ident.country else ""), facts + evidence)
    # authenticate (and the route's own challenge, which runs right after it)
    who = [(n, v) for n, v in (("method", ident.method), ("subject", ident.subject), ("key_id", ident.key_id), ("tier", ident.tier), ("bot", ident.bot)) if v]
    challenge_refused = bool(route is not None and route.challenge is not None and not laps[PLAN] and reason.code.startswith("challenge."))
    if not laps[AUTHENTICATE]:
        verdict("authenticate", "skipped", "not reached")
    elif refused and last == AUTHENTICATE and not challenge_refused:
        verdict("authenticate", "refused", f"{reason.code}: {reason.description}", who)
    else:
        verdict("authenticate", "passed", f"{ident.method or 'anonymous'}" + (f" as {ident.subject}" if ident.subject else ""), who)
    if route is None or route.challenge is None:
        verdict("challenge", "none", "the route demands no proof of work")
    elif challenge_refused:
        verdict("challenge", "refused", f"{reason.code}: a proof of work is demanded")
    elif laps[PLAN]:
        verdict("challenge", "passed", "a valid solution was presented")
    else:
        verdict("challenge", "skipped", "not reached")
    # plan, apply, judge
    if not laps[PLAN]:
        verdict("plan", "skipped", "not reached")
        verdict("apply", "skipped", "no store call")
        verdict("judge", "skipped", "nothing to judge")
    else:
        verdict("plan", "planned", f"{len(ctx.ops)} operations in one batch", [(type(op).__name__, _op_text(op)) for op in ctx.ops])
        if not ctx.ops:
            verdict("apply", "skipped", "no stateful check: no store call")
        elif dry.error:
            verdict("apply", "failed", f"the store failed ({dry.error}); the route's on_store_error decided", [("store.error", dry.error)])
        else:
            verdict("apply", "answered", "the store answered the batch as a dry run (nothing written)")
        results = [(_op_text(op), _result_text(r)) for ops, res in dry.batches for op, r in zip(ops, res, strict=True)]
        if ctx.score is not None:
            results.append(("reputation.score", f"{ctx.score:g}"))
        if refused and last >= APPLY:
            verdict("judge", "refused", f"{reason.code}: {reason.description}", results)
        else:
            verdict("judge", "passed", "every check passed" if ctx.ops else "no stateful check", results)
    headers = decision.upstream_headers + decision.client_headers if decision.allowed else decision.client_headers
    verdict("respond", decision.outcome.value, f"{decision.status} {reason.code}", [*decision.signals, *headers])
    return out
