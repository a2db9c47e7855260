"""The gRPC ext_authz service: CheckRequest -> engine -> CheckResponse. No decision logic here.

The method is registered with our own deserializer so that a request that is
not even valid protobuf (bad wire format, invalid UTF-8 in a string field) is
answered with a deny and a reason, not a gRPC error that Envoy would treat as
an authorization-server failure.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from authz.adapters import Malformed, envoy_grpc
from authz.decision import REQUEST_MALFORMED
from authz.pipeline import Engine
from authz.request import Request

log = logging.getLogger("authz.ext_authz")

SERVICE_NAME = "envoy.service.auth.v3.Authorization"
_UNREADABLE = Request(method="", path="", door="grpc")


class _Undecodable:
    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail


def _deserialize(data: bytes) -> Any:
    try:
        return envoy_grpc.CheckRequest.FromString(data)
    except DecodeError as exc:
        return _Undecodable(str(exc) or "not a valid CheckRequest")


class AuthorizationService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        engine = self.engine
        if type(request) is _Undecodable:
            decision = engine.malformed(_UNREADABLE, REQUEST_MALFORMED, request.detail)
            return envoy_grpc.to_response(decision)
        limits = engine.policy.limits
        try:
            req = envoy_grpc.to_request(
                request, max_headers=limits.max_headers * 4, max_header_bytes=limits.max_header_bytes
            )
        except Malformed as exc:
            decision = engine.malformed(_UNREADABLE, exc.reason, exc.detail)
            return envoy_grpc.to_response(decision)
        decision = await engine.decide(req)
        return envoy_grpc.to_response(decision)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self.check,
                    request_deserializer=_deserialize,
                    response_serializer=envoy_grpc.CheckResponse.SerializeToString,
                )
            },
        )
