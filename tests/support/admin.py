"""Calling the admin listener in tests: tokens, bearer metadata on any channel, dynamic messages.

``bearer_channel`` wraps a synchronous channel so every call carries
``authorization: Bearer <token>`` (grpcio-reflection's client and dynamic
stubs take a plain channel); ``reflected_call`` builds request and answer
classes from the server's reflection alone, as grpcurl does.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def new_token() -> str:
    return "azt_" + secrets.token_urlsafe(24)


def write_tokens(path: Path, tokens: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}:{token}\n" for name, token in tokens.items()))
    return path


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class _Bearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self.metadata = bearer(token)

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=(*(details.metadata or ()), *self.metadata))

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def bearer_channel(channel: grpc.Channel, token: str) -> grpc.Channel:
    return grpc.intercept_channel(channel, _Bearer(token))


def reflected_call(channel: grpc.Channel, method: str, request_json: str) -> dict[str, Any]:
    """Call ``/pkg.Service/Method`` with messages built only from the server's reflection."""
    db = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(db)
    service_name, _, method_name = method.strip("/").rpartition("/")
    service = pool.FindServiceByName(service_name)
    m = service.methods_by_name[method_name]
    request_cls = message_factory.GetMessageClass(m.input_type)
    response_cls = message_factory.GetMessageClass(m.output_type)
    call = channel.unary_unary(method, request_serializer=lambda r: r.SerializeToString(), response_deserializer=response_cls.FromString)
    request = json_format.Parse(request_json, request_cls())
    reply = call(request, timeout=5)
    out: dict[str, Any] = json_format.MessageToDict(reply, preserving_proto_field_name=True)
    return out


__all__ = ["bearer", "bearer_channel", "new_token", "reflected_call", "write_tokens"]
