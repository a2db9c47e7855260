"""The admin gRPC API (protos/authz/admin/v1/admin.proto): decision inspection.

It reads the decision ring; it never touches the hot path.
"""

from __future__ import annotations

import grpc

from authz.admin.v1 import admin_pb2, admin_pb2_grpc
from authz.decision import Decision
from authz.decisionlog import DecisionLog


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
    )


class DecisionsService(admin_pb2_grpc.DecisionsServicer):
    def __init__(self, decisions: DecisionLog) -> None:
        self.decisions = decisions

    async def GetDecision(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.GetDecisionRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Decision:
        d = self.decisions.get(request.id)
        if d is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no decision {request.id!r} in the ring")
            raise AssertionError("abort raises")
        return to_proto(d)

    async def ListDecisions(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ListDecisionsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListDecisionsResponse:
        limit = request.limit or 50
        f = request.filter
        reason = f.reason
        out = []
        for d in self.decisions.recent():
            if f.outcome and d.outcome.value != f.outcome:
                continue
            if reason and not (d.reason == reason or (reason.endswith(".") and d.reason.startswith(reason))):
                continue
            if f.route and d.route != f.route:
                continue
            if f.client_ip and d.identity.client_ip != f.client_ip:
                continue
            out.append(to_proto(d))
            if len(out) >= limit:
                break
        return admin_pb2.ListDecisionsResponse(decisions=out)
