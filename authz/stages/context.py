"""What the stages of one request share: the request, the clock reading, and what
has been decided so far. One ``Ctx`` per request; stages write to it, the
respond stage turns it into a ``Decision``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from authz.decision import Identity, Reason
from authz.request import Request
from authz.store.base import Op, Result


class Ctx:
    __slots__ = (
        "req",
        "now_ms",
        "id",
        "route_name",
        "identity",
        "reason",
        "status",
        "signals",
        "upstream_headers",
        "client_headers",
        "deny_headers",
        "remove_headers",
        "ops",
        "checks",
        "body",
        "offers",
        "degraded",
        "evidence",
        "late_evidence",
        "finalizers",
        "score",
        "top_signals",
        "delay_ms",
        "decoy",
        "outcome",
        "feedback",
    )

    def __init__(self, req: Request, now_ms: int, decision_id: str) -> None:
        self.req = req
        self.now_ms = now_ms
        self.id = decision_id
        #: the name of the matched route ("" until the route stage found one)
        self.route_name = ""
        self.identity = Identity()
        #: the reason code of the first check that refused the request; None while all passed
        self.reason: Reason | None = None
        #: an HTTP status overriding the reason's default (e.g. 403 for insufficient_scope)
        self.status = 0
        self.signals: list[tuple[str, str]] = []
        #: headers for the backend, on allow
        self.upstream_headers: list[tuple[str, str]] = []
        #: headers for the client, on allow and on deny (RateLimit, ...)
        self.client_headers: list[tuple[str, str]] = []
        #: headers for the client on deny only (WWW-Authenticate, Retry-After)
        self.deny_headers: list[tuple[str, str]] = []
        #: request headers to strip before the backend
        self.remove_headers: list[str] = []
        #: the state operations planned for this request, and who judges each result
        self.ops: list[Op] = []
        self.checks: list[StatefulCheck] = []
        #: more members of a refusal's JSON body (a "hint", the "quota" that tripped)
        self.body: dict[str, str] = {}
        #: check kinds that could not be checked against the store (x-authz-degraded)
        self.degraded: list[str] = []
        #: what this request shows about its sender before the decision, (signal, strength 0..1):
        #: the reputation stage weighs it into the senders' scores
        self.evidence: list[tuple[str, float]] = []
        #: evidence found while judging (a broken journey): recorded with the decision's outcome
        self.late_evidence: list[tuple[str, float]] = []
        #: run once every result has been judged (a judgement over several results)
        self.finalizers: list[Callable[[Ctx], None]] = []
        #: the reputation score (0-100) and its top signals with their share, when the route scores
        self.score: float | None = None
        self.top_signals: list[tuple[str, float]] = []
        #: hold the answer this long (tarpit), a decoy answer
        self.delay_ms = 0
        self.decoy: tuple[int, str, bytes] | None = None
        #: the evidence a decision's reason code reveals, as operations for a background batch
        self.outcome: Callable[[str], list[Op]] | None = None
        #: what the proxy's access log hands back with the backend's status (``ReputationStage.feedback``)
        self.feedback: tuple[str, ...] = ()
        #: the route's authentication methods, asked for their offers on a 401 (Accept-Signature)
        self.offers: tuple[Offers, ...] = ()

    def refuse(self, reason: Reason, *, status: int = 0) -> None:
        """Record a refusal; the first one decides the outcome."""
        if self.reason is None:
            self.reason = reason
            self.status = status

    def plan(self, op: Op, check: StatefulCheck) -> None:
        """Add a state operation to the request's single store call."""
        self.ops.append(op)
        self.checks.append(check)


class Offers(Protocol):
    """Something that tells a refused client how to authenticate (authentication methods)."""

    def offer(self, req: Request) -> list[tuple[str, str]]:
        """Headers for a 401 answer of a route that accepts this method (e.g. Accept-Signature)."""
        ...


class StatefulCheck(Protocol):
    """Judges the result of one planned store operation."""

    @property
    def kind(self) -> str:
        """The family of the check for fail-open/closed policy: quota or replay."""
        ...

    def judge(self, result: Result, op: Op, ctx: Ctx) -> None:
        """Read the store's result; call ``ctx.refuse`` to deny, add headers or signals."""
        ...


def signal(ctx: Ctx, name: str, value: Any) -> None:
    ctx.signals.append((name, str(value)))
