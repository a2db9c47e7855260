"""The decision pipeline: the whole product in one function.

    route -> identify -> authenticate -> plan -> apply (one store call) -> judge -> respond

Each stage lives in authz/stages/; the store in authz/store/. ``Engine.decide``
never raises: malformed input becomes a deny with a reason, a store failure
follows the route's fail-open/closed policy, and any other exception becomes
a 503 ``internal.error`` (fail closed), logged once with the decision id.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from time import perf_counter_ns

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
from authz.store.base import Op, PartialFailure, Store
from authz.store.memory import MemoryStore

log = logging.getLogger("authz.engine")

#: background evidence batches in flight at most; more are dropped (and counted)
MAX_RECORDING = 1000
#: answers held by tarpits at once at most
MAX_TARPITS = 256


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

    async def _run(self, ctx: Ctx, policy: Policy, laps: Laps | None = None) -> str:
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
                results = await self.store.apply(ctx.ops, ctx.now_ms)
            except StoreError as exc:
                laps[APPLY] = perf_counter_ns()
                self._store_failed(ctx, route.on_store_error, exc)
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

    def _store_failed(self, ctx: Ctx, modes: Mapping[str, str], exc: StoreError) -> None:
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
            for (check, op), result in zip(local, self.local_store.apply_sync(ops, ctx.now_ms), strict=True):
                check.judge(result, op, ctx)
            ctx.signals.append(("store.fallback", "local"))
        if ctx.reason is None:
            ctx.reason = OK_STORE_UNAVAILABLE
        elif partial is not None:
            partial.compensate()
