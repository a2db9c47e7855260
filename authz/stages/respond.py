"""Stage 7, respond: turn what the stages found into a ``Decision``.

On allow the backend receives ``x-authz-*`` headers it can trust: authz sets
them with overwrite semantics, and any other ``x-authz-*`` header the client
sent is removed before the request goes upstream. On deny the client gets the
reason's status, a small JSON body and the decision id.
"""

from __future__ import annotations

from authz.decision import REASONS, Decision, Outcome
from authz.stages.context import Ctx

HEADER_PREFIX = "x-authz-"
DECISION_ID = "x-authz-decision-id"


def finish(ctx: Ctx, route_name: str, duration_us: int = 0) -> Decision:
    req = ctx.req
    reason_code = ctx.reason or "ok"
    reason = REASONS[reason_code]
    ident = ctx.identity
    decision = Decision(
        id=ctx.id,
        outcome=reason.outcome,
        status=ctx.status or reason.status,
        reason=reason_code,
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
    )
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
        decision.upstream_headers = up
        ours = {name for name, _ in up}
        remove = ctx.remove_headers
        for name in req.headers:
            if name.startswith(HEADER_PREFIX) and name not in ours:
                remove.append(name)
        decision.remove_headers = remove
    else:
        decision.client_headers = [
            *ctx.client_headers,
            *ctx.deny_headers,
            (DECISION_ID, ctx.id),
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ]
        decision.body = b'{"error":"%s","decision_id":"%s"}' % (
            reason_code.encode(),
            ctx.id.encode(),
        )
    return decision
