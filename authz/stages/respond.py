"""Stage 7, respond: turn what the stages found into a ``Decision``.

On allow the backend receives ``x-authz-*`` headers it can trust: authz sets
them with overwrite semantics, and every client-sent header that authz did
not set for this request is removed before the request goes upstream when it
is an ``x-authz-*`` name or a name any method of the policy may set (the
policy's ``upstream_headers``, collected at load: a JWT provider's claim
headers are removed on a route that another method or ``anonymous``
authenticated). On deny the client gets the reason's status, a small JSON
body and the decision id.
"""

from __future__ import annotations

import json

from authz.decision import INTERNAL_ERROR, OK, Decision, Outcome
from authz.request import Request
from authz.stages.context import Ctx

HEADER_PREFIX = "x-authz-"
DECISION_ID = "x-authz-decision-id"
#: the headers this stage sets on an allowed request (methods add their own, e.g. JWT claims)
UPSTREAM_HEADERS = frozenset(
    {
        DECISION_ID, "x-authz-client-ip", "x-authz-auth", "x-authz-subject", "x-authz-key-id",
        # answers decided without the store, shadow quotas that would have refused, the reputation score
        "x-authz-degraded", "x-authz-shadow", "x-authz-score", "x-authz-signals",
    }
)  # fmt: skip
#: names no method may set: the above, and the two the HTTP door's nginx convention answers refusals with
RESERVED_HEADERS = UPSTREAM_HEADERS | {"x-authz-status", "x-authz-reason"}


#: ordinary headers whose presence the decision log keeps (replays and the simulator read it)
_PLAIN = ("accept", "accept-language", "accept-encoding", "referer", "cookie")


def finish(ctx: Ctx, route_name: str, duration_us: int = 0, managed: frozenset[str] = UPSTREAM_HEADERS) -> Decision:
    """The decision. ``managed``: every upstream header name the policy may set (``Policy.upstream_headers``)."""
    req = ctx.req
    reason = ctx.reason or OK
    ident = ctx.identity
    decision = Decision(
        id=ctx.id,
        outcome=reason.outcome,
        status=ctx.status or reason.status,
        reason=reason,
        time_ms=ctx.now_ms,
        route=route_name,
        identity=ident,
        signals=ctx.signals,
        client_headers=ctx.client_headers,
        duration_us=duration_us,
        method=req.method,
        host=req.host,
        path=req.path,
        door=req.door,
        route_path=req.known_route_path,
        request_id=req.request_id,
        user_agent=req.headers.get("user-agent", "")[:256],
        plain_headers=",".join(h for h in _PLAIN if h in req.headers),
        score=ctx.score,
        top_signals=ctx.top_signals,
        feedback=ctx.feedback,
    )
    if ctx.decoy is not None:
        # a decoy looks like the API answering: none of authz's own headers, no reason
        status, content_type, decoy_body = ctx.decoy
        decision.status = status
        decision.client_headers = [("content-type", content_type), ("cache-control", "no-store")]
        decision.body = decoy_body
        return decision
    if reason.outcome is Outcome.ALLOW:
        up = ctx.upstream_headers
        up.append((DECISION_ID, ctx.id))
        up.append(("x-authz-client-ip", ident.client_ip))
        if ident.method:
            up.append(("x-authz-auth", ident.method))
        if ident.subject:
            up.append(("x-authz-subject", ident.subject))
        if ident.key_id:
            up.append(("x-authz-key-id", ident.key_id))
        if ctx.degraded:
            up.append(("x-authz-degraded", ",".join(ctx.degraded)))
        decision.upstream_headers = up
        ours = {name for name, _ in up}
        remove = ctx.remove_headers
        for name in req.headers:  # lower-cased by the doors, repeated lines already one entry
            if name not in ours and (name.startswith(HEADER_PREFIX) or name in managed):
                remove.append(name)
        if remove:
            # once each, and never a header authz sets (a removal would delete authz's own value)
            remove = [name for name in dict.fromkeys(remove) if name not in ours]
        decision.remove_headers = remove
    else:
        deny = ctx.deny_headers
        if decision.status == 401 and ctx.offers:
            for method in ctx.offers:
                for header in method.offer(req):
                    if header not in deny:
                        deny.append(header)
        if ctx.degraded:
            deny.append(("x-authz-degraded", ",".join(ctx.degraded)))
        decision.client_headers = [
            *ctx.client_headers,
            *ctx.deny_headers,
            (DECISION_ID, ctx.id),
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ]
        body = {"error": reason.code, "decision_id": ctx.id, **ctx.body}
        decision.body = json.dumps(body, separators=(",", ":")).encode()
    return decision


def failed(req: Request, ctx: Ctx | None) -> Decision:
    """The fail-closed decision when deciding itself broke: built from plain values only."""
    decision_id = ctx.id if ctx is not None else "unknown"
    body = b'{"error":"internal.error","decision_id":"%s"}' % decision_id.encode("ascii", "replace")
    return Decision(
        id=decision_id,
        outcome=INTERNAL_ERROR.outcome,
        status=INTERNAL_ERROR.status,
        reason=INTERNAL_ERROR,
        time_ms=ctx.now_ms if ctx is not None else 0,
        route=ctx.route_name if ctx is not None else "",
        client_headers=[
            (DECISION_ID, decision_id),
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ],
        body=body,
        method=req.method,
        host=req.host,
        path=req.path,
        door=req.door,
        route_path=req.known_route_path,
    )
