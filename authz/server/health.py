"""grpc.health.v1.Health with ``List``: grpcio-health-checking's aio servicer answers only Check and Watch.

``List`` (added to the health proto in 2024) returns every service authz has
set a status for, the server's own entry ``""`` included, with that status.
Reflection lists the Health service, so tools (grpcurl, grpc_health_probe)
call List; the stock servicer answered it ``UNIMPLEMENTED`` and logged a
traceback.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
#: the health proto allows RESOURCE_EXHAUSTED beyond what a server wants to list
MAX_LISTED = 100


class HealthServicer(health_aio.HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, Any] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._final = False

    async def set(self, service: str, status: Any) -> None:
        if self._final:
            return
        self._statuses[service] = status
        await super().set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        if not self._final:
            for service in self._statuses:
                self._statuses[service] = health_pb2.HealthCheckResponse.NOT_SERVING
            self._final = True
        await super().enter_graceful_shutdown()

    async def List(  # noqa: N802 - gRPC method name
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        statuses = dict(self._statuses)
        if len(statuses) > MAX_LISTED:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"more than {MAX_LISTED} services")
        reply = health_pb2.HealthListResponse()
        for name, status in statuses.items():
            reply.statuses[name].status = status
        return reply
